"""The session-mode rows: every request carries the session cookie and is checked in the store.

certgate runs with ``required_auth_methods = [["tls-cert", "password"]]`` (session mode) on a
SQLite store and on a Redis store (a redis-server started here), and once certificate-only
for comparison, all on the same cores. A session bound to the bench client certificate is
planted in the store through the store's own blocking face (what a login would have
written), and wrk sends keep-alive requests with its cookie: each request is a cookie parse,
a store read (and a store write when the proof moves or a second passed), then forwarding.
A run is valid only if the cookie gets 200 and a request without it gets 401.
"""

from __future__ import annotations

import hashlib
import http.client
import secrets
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

from . import configs, phases
from .procs import Proc, pause, start

COOKIE = "__Host-certgate"


def _config(d: Path, pki: Path, port: int, upstream_port: int, store: str) -> Path:
    conf = configs.certgate(d, pki, port, upstream_port, 1, shared_sessions=False)
    text = conf.read_text().replace('required_auth_methods = [["tls-cert"]]',
                                    'required_auth_methods = [["tls-cert", "password"]]')
    conf.write_text(text + f"\n[sessions]\nstore = {store}\n")
    return conf


def plant_session(store: str, base_dir: Path, pki: Path) -> str:
    """A live session of the bench client certificate in ``store``; its cookie token."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from proxy.sessions.manager import session_id_for
    from proxy.stores import open_engine
    from proxy.stores.interface import SessionRecord

    der = x509.load_pem_x509_certificate((pki / "client.pem").read_bytes()).public_bytes(Encoding.DER)
    token = secrets.token_urlsafe(32)
    now = time.time()
    engine = open_engine(store, base_dir)
    try:
        engine.create(SessionRecord(id=session_id_for(token), account="alice",
                                    fingerprint=hashlib.sha256(der).hexdigest(), cert_der=der, chain_der=(),
                                    created_at=now, proved_at=now, last_seen=now, methods=("tls-cert", "password"),
                                    client_ip="127.0.0.1"))
    finally:
        engine.close()
    return token


def _status(port: int, pki: Path, cookie: str | None) -> int:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        c.request("GET", "/", headers={"Accept": "application/json", **({"Cookie": cookie} if cookie else {})})
        return c.getresponse().status
    finally:
        c.close()


def _redis(out: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server")
    import socket

    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    d = out / "run" / "redis"
    d.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
                          "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, port


def run(env: Any, seconds: float, upstream: Proc, conns: int = 32) -> list[dict[str, Any]]:
    """One keep-alive phase per mode (certificate-only, session on SQLite, session on Redis)."""
    pki = env.out / "pki" / "ec"
    rows: list[dict[str, Any]] = []
    redis, rport = _redis(env.out)
    try:
        for mode, store in (("certificate-only", None), ("session, sqlite", "sqlite:sessions.db"),
                            ("session, redis", f"redis://127.0.0.1:{rport}/0")):
            d = env.out / "run" / f"session-{mode.replace(', ', '-')}"
            port = env.ports.proxy("certgate")
            if store is None:
                conf = configs.certgate(d, pki, port, env.ports.upstream, 1, shared_sessions=False)
            else:
                conf = _config(d, pki, port, env.ports.upstream, store)
            proc = start("certgate", [*env.certgate, "run", "--config", str(conf)],
                         env.out / "logs" / f"session-{mode.replace(', ', '-')}.log", env.server_cpus, cwd=d)
            row: dict[str, Any] = {"mode": mode, "store": store or "-", "valid": False}
            try:
                if not proc.wait_port(port):
                    row["error"] = "did not start: " + proc.log_tail()[-300:]
                    rows.append(row)
                    continue
                pause(0.5)
                cookie = None
                if store is not None:
                    cookie = f"{COOKIE}={plant_session(store, d, pki)}"
                    ok = _status(port, pki, cookie) == 200 and _status(port, pki, None) == 401
                else:
                    ok = _status(port, pki, None) == 200
                if not ok:
                    row["error"] = "validity check failed (cookie 200, no cookie 401)"
                    rows.append(row)
                    continue
                t = phases.Target(proc, port, [upstream], pki, env.cgload, env.shim, env.load_cpus)
                argv = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency"]
                if cookie:
                    argv += ["-H", f"Cookie: {cookie}"]
                r = phases.run_phase(t, f"ka-{mode}", argv + [t.url()], phases.parse_wrk, seconds, env=t.wrk_env())
                row.update(valid=not r.get("errors") and r.get("ok", 0) > 0, rate=r.get("rate"),
                           us=r.get("server_us_per_op"), p99_ms=r.get("p99_ms"), errors=r.get("errors"),
                           foreign_cores=r.get("foreign_cores"))
                rows.append(row)
            finally:
                proc.stop()
                pause(0.5)
    finally:
        redis.terminate()
        redis.wait(10)
    return rows


def render(rows: list[dict[str, Any]], conns: int = 32) -> tuple[str, str]:
    """The rows as a text and a markdown table (requests/s, server CPU µs per request, p99)."""
    head = f"Session mode: keep-alive requests (wrk -c{conns}), certgate alone, one worker"
    md = [f"### {head}", "", "| mode | store | req/s ↑ | server µs/req ↓ | p99 ms ↓ | note |", "|---|---|---|---|---|---|"]
    txt = [head]
    for r in rows:
        note = "" if r["valid"] else r.get("error") or f"{r.get('errors')} errors"
        fmt = (lambda v, f: f.format(v) if isinstance(v, (int, float)) else "-")
        cells = [r["mode"], r["store"], fmt(r.get("rate"), "{:.0f}"), fmt(r.get("us"), "{:.0f}"),
                 fmt(r.get("p99_ms"), "{:.1f}"), note]
        md.append("| " + " | ".join(cells) + " |")
        txt.append(f"  {cells[0]:18} {cells[1][:32]:32} {cells[2]:>8} req/s {cells[3]:>6} µs/req p99 {cells[4]:>6} ms "
                   f"{note}")
    return "\n".join(txt) + "\n", "\n".join(md) + "\n"
