"""A REAL cockpit-ws (Debian's ``cockpit-ws`` + ``cockpit-bridge``) on a free loopback port.

Usage::

    with CockpitWs(auth_command=[CERTGATE, "cockpit-auth", "--config", str(cfg)]) as ws:
        ws.port, ws.base_url          # http://127.0.0.1:PORT (cockpit-ws --for-tls-proxy: no TLS itself)
        ws.origin                     # https://127.0.0.1:PORT, the Origin it accepts for Host 127.0.0.1:PORT
        ws.log()                      # cockpit-ws + auth command + bridge stderr so far

cockpit-ws runs ``--for-tls-proxy`` with a private ``XDG_CONFIG_DIRS`` whose cockpit.conf has
``[bearer] Command = <auth_command>`` (through a generated wrapper script when it has
arguments: cockpit 287 execs ``Command`` as one path, it does not split arguments) (cockpit 287 then ignores /etc/cockpit), ``LoginTo =
false``, ``[basic]`` as asked and ``[negotiate] action = none``. ``DBUS_SESSION_BUS_ADDRESS`` and
``SSH_AUTH_SOCK`` are set to inert paths so the 287 bridge starts no helper daemons that could
outlive the test. The process runs in its own session; the whole group is killed at the end.
A missing cockpit-ws is a loud failure (RuntimeError), never a skip.
"""

from __future__ import annotations

import http.client
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from tests.harness.process import Logged, read_log
from tests.harness.wait import free_port

COCKPIT_WS_PATHS = ("/usr/lib/cockpit/cockpit-ws", "/usr/libexec/cockpit-ws")


def find_cockpit_ws() -> str:
    """The cockpit-ws binary; RuntimeError naming the packages when it is not installed."""
    for p in COCKPIT_WS_PATHS:
        if os.access(p, os.X_OK):
            if shutil.which("cockpit-bridge") is None:
                raise RuntimeError("cockpit-bridge is not installed (apt-get install cockpit-bridge)")
            return p
    raise RuntimeError(f"cockpit-ws not found at {' or '.join(COCKPIT_WS_PATHS)} "
                       "(apt-get install cockpit-ws cockpit-bridge); the Cockpit tests need the real one")


def cockpit_conf(auth_command: Sequence[str], *, basic: bool = False, url_root: str = "",
                 max_startups: int = 20, extra_webservice: Sequence[str] = ()) -> str:
    """The cockpit.conf text for tests (same shape as ``conf/cockpit.conf``)."""
    lines = ["[WebService]", "LoginTo = false", f"MaxStartups = {max_startups}"]
    if url_root:
        lines.append(f"UrlRoot = {url_root}")
    lines += list(extra_webservice)
    # cockpit 287 execs Command as ONE path (no argument splitting): a command with arguments
    # goes through a wrapper script (see CockpitWs.start)
    lines += ["", "[bearer]", "Command = " + auth_command[0], "timeout = 30", ""]
    if not basic:
        lines += ["[basic]", "action = none", ""]
    lines += ["[negotiate]", "action = none", ""]
    return "\n".join(lines)


class CockpitWs:
    """Start/stop one cockpit-ws; see the module docstring."""

    def __init__(self, auth_command: Sequence[str], *, basic: bool = False, url_root: str = "",
                 env: Mapping[str, str] | None = None, extra_webservice: Sequence[str] = ()) -> None:
        self.auth_command = list(auth_command)
        self.proc: subprocess.Popen[bytes] | None = None
        self._child: Logged | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="certgate-cockpit-ws-"))
        self.dir.chmod(0o755)  # the bridge (another user) reads cockpit/*.override.json here
        command = self.auth_command
        if len(command) > 1:  # cockpit 287 cannot pass arguments: wrap them in a script
            wrapper = self.dir / "certgate-cockpit-auth"
            wrapper.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in command) + ' "$@"\n')
            wrapper.chmod(0o755)
            command = [str(wrapper)]
        self.conf_text = cockpit_conf(command, basic=basic, url_root=url_root, extra_webservice=extra_webservice)
        self.env = dict(env or {})
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> "CockpitWs":
        binary = find_cockpit_ws()
        (self.dir / "cockpit").mkdir()
        (self.dir / "cockpit" / "cockpit.conf").write_text(self.conf_text)
        self.port = free_port()
        env = dict(os.environ)
        env["XDG_CONFIG_DIRS"] = str(self.dir)
        env["DBUS_SESSION_BUS_ADDRESS"] = "unix:path=/nonexistent-certgate-test-bus"
        env["SSH_AUTH_SOCK"] = "/nonexistent-certgate-test-agent"
        env.update(self.env)
        self._child = Logged([binary, "--for-tls-proxy", "--address", "127.0.0.1", "--port", str(self.port)],
                             self.dir / "ws.log", env=env)
        self.proc = self._child.proc

        def up() -> bool:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                c.request("GET", "/ping")
                return c.getresponse().status == 200
            except OSError:
                return False
            finally:
                c.close()

        try:
            self._child.wait_until(up, 10.0, "cockpit-ws to answer /ping")
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return read_log(self.dir / "ws.log")

    def stop(self) -> None:
        """Kill cockpit-ws's process group (bridges, auth commands) and remove the temp folder."""
        if self._child is not None:
            self._child.stop(5)
        if self.proc is not None:
            try:  # bridges started with runuser stay in the group; make sure none survives
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "CockpitWs":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
