"""Cockpit through certgate: the config ``certgate cockpit-auth`` reads, a Cockpit WebSocket
client (init, then a ``stream`` channel running a command), and the local account the bridge
runs as. The cockpit-ws process itself is :mod:`tests.harness.cockpit_ws`.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from pathlib import Path
from typing import Any, Mapping

from proxy.login.keys import load_secret
from tests.harness.cockpit_ws import CockpitWs
from tests.harness.config import overlay, render
from tests.harness.gateway import CERTGATE
from tests.harness.pki import Pki


def bridge_account() -> str:
    """The local user the test logs in as: ``nobody`` when running as root (the bridge then runs
    through ``runuser``), else the current user (an unprivileged cockpit-ws can only start itself)."""
    return "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def write_cockpit_auth_config(folder: Path, *, store: str = "sqlite:sessions.db",
                              extra: Mapping[str, Mapping[str, object]] | None = None) -> Path:
    """A valid certgate config in ``folder`` (a :class:`~tests.harness.pki.Pki` of its own, the
    secret key created) for ``certgate cockpit-auth``; returns its path."""
    pki = Pki(folder, clients=(), ca_name="cockpit-auth test CA")
    sections = overlay({
        "listen": {"certificate": pki.server_cert, "key": pki.server_key},
        "trust": {"store": pki.store},
        "upstream": {"url": "http://127.0.0.1:9", "kind": "cockpit"},
        "sessions": {"store": store},
        "login": {"secret_key": folder / "certgate.secret"},
    }, extra)
    path = folder / "certgate.conf"
    path.write_text(render(sections))
    load_secret(folder / "certgate.secret", create=True)
    return path


def ctl(obj: Mapping[str, Any]) -> str:
    """A Cockpit control message (channel "") as the WebSocket text frame carries it."""
    return "\n" + json.dumps(obj)


async def _run_command(uri: str, origin: str, headers: Mapping[str, str], argv: list[str], ssl_ctx: Any,
                       server_hostname: str | None) -> dict[str, Any]:
    import websockets

    kw: dict[str, Any] = {"subprotocols": ["cockpit1"], "origin": origin, "additional_headers": dict(headers),
                          "max_size": None, "open_timeout": 15}
    if ssl_ctx is not None:
        kw["ssl"] = ssl_ctx
        kw["server_hostname"] = server_hostname
    result: dict[str, Any] = {"output": "", "controls": []}
    async with websockets.connect(uri, **kw) as ws:
        result["subprotocol"] = ws.subprotocol
        first = await asyncio.wait_for(ws.recv(), 15)
        channel, _, payload = str(first).partition("\n")
        result["init"] = json.loads(payload)
        if result["init"].get("problem"):
            return result
        await ws.send(ctl({"command": "init", "version": 1}))
        await ws.send(ctl({"command": "open", "channel": "s1", "payload": "stream", "spawn": argv, "err": "out"}))
        for _ in range(50):
            msg = str(await asyncio.wait_for(ws.recv(), 15))
            channel, _, payload = msg.partition("\n")
            if channel == "s1":
                result["output"] += payload
            elif channel == "":
                m = json.loads(payload)
                result["controls"].append(m)
                if m.get("command") == "close" and m.get("channel") == "s1":
                    break
        result["ws"] = None
    return result


def cockpit_run(uri: str, origin: str, headers: Mapping[str, str], argv: list[str], *, ssl_ctx: Any = None,
                server_hostname: str | None = None) -> dict[str, Any]:
    """Open ``/cockpit/socket`` (subprotocol cockpit1, ``origin``), answer ``init``, run ``argv`` in a
    ``stream`` channel; returns ``{"subprotocol", "init", "output", "controls"}``."""
    return asyncio.run(_run_command(uri, origin, headers, argv, ssl_ctx, server_hostname))


def cockpit_auth_ws(folder: Path, *, secret: Path, store: str) -> CockpitWs:
    """A (not yet started) cockpit-ws whose bearer command is ``certgate cockpit-auth`` with a
    config in ``folder`` that shares the gateway's ``secret`` (created when missing) and session
    ``store`` — how certgate and cockpit-ws are deployed together. Use it in a ``with``."""
    load_secret(secret, create=True)
    cfg = write_cockpit_auth_config(folder, extra={"login": {"secret_key": secret}, "sessions": {"store": store}})
    return CockpitWs([CERTGATE, "cockpit-auth", "--config", str(cfg)])
