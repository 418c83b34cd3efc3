"""Gateway launchers: the real ``certgate run`` process, the HTTP layer behind a fake gate, and
``certgate demo-upstream``.

- :class:`Gateway`: ``certgate run --config PATH`` as a real process in its own session; started,
  it accepts connections on the config's port. Its log goes to ``gateway-PORT.log`` next to the
  config; :meth:`Gateway.audit` reads the audit file a config names.
- :class:`GatewayProcess`: :mod:`tests.harness.fakegate` in a subprocess: the real HTTP layer
  behind TLS (or plain), with a gate steered by the request path, for forwarding tests.
- :class:`DemoUpstream`: ``certgate demo-upstream`` on a free port (a page echoing its request).
- :func:`certgate_cli`: run the ``certgate`` console script once.

Every process is stopped for sure at exit (SIGTERM, then SIGKILL after a deadline).
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping

from tests.harness.config import config_port
from tests.harness.pki import Pki
from tests.harness.process import Logged, read_log, stop_process
from tests.harness.wait import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CERTGATE = str(VENV_BIN / "certgate")


def certgate_cli(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real ``certgate`` console script with ``args``; returns the CompletedProcess
    (text output captured). TimeoutExpired after ``timeout`` s."""
    return subprocess.run([CERTGATE, *map(str, args)], text=True, capture_output=True, timeout=timeout)


class Gateway:
    """``certgate run --config PATH`` as a real process; :meth:`start` returns once it accepts
    connections (RuntimeError with the log if it exits first, AssertionError after
    ``start_timeout``)."""

    def __init__(self, config: Path, *, env: Mapping[str, str] | None = None, start_timeout: float = 20.0,
                 args: Iterable[str] = (), exe: str | None = None) -> None:
        self.config = Path(config)
        self.exe = exe or CERTGATE
        self.port = config_port(self.config)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.start_timeout = start_timeout
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.config.parent / f"gateway-{self.port}.log"
        self._child: Logged | None = None

    def start(self) -> "Gateway":
        self._child = Logged([self.exe, "run", "--config", str(self.config), *self.args], self.log_path,
                             env=self.env)
        self._child.name = "certgate"
        self.proc = self._child.proc
        self._child.wait_listening(self.port, self.start_timeout, f"certgate to listen on {self.port}")
        return self

    def log(self) -> str:
        """Everything the process wrote so far."""
        return read_log(self.log_path)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL the process group; returns the exit status."""
        return self._child.stop(timeout) if self._child is not None else None

    def audit(self) -> list[dict[str, Any]]:
        """The audit records of the file ``[audit] file`` names (a line that is no JSON as
        ``{"unparsed": ...}``); [] when there is none yet."""
        cp = configparser.ConfigParser(interpolation=None)
        cp.read(self.config)
        name = cp.get("audit", "file", fallback="")
        out: list[dict[str, Any]] = []
        for line in read_log(Path(name)).splitlines() if name else []:
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"unparsed": line[:300]})
        return out

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayProcess:
    """:mod:`tests.harness.fakegate` in a subprocess: the real HTTP layer, TLS, a fake gate.

    ``config`` is ``{"upstream": URL, "overrides": {...}, "routes": [...]}`` (see
    :func:`tests.harness.config.engine_config`); ``pki`` gives the server certificate and the CA
    whose clients it accepts; ``plain`` listens without TLS.
    """

    def __init__(self, config: dict[str, Any], pki: Pki | None, *, plain: bool = False) -> None:
        spec = {"config": config, "pki": pki.files if pki else None, "plain": plain}
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        script = os.environ.get("GW_SCRIPT", str(ROOT / "tests" / "harness" / "fakegate.py"))
        self.proc = subprocess.Popen([sys.executable, script, json.dumps(spec)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=str(ROOT))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"gateway did not start: {err}")
        self.port = json.loads(line)["port"]
        self.pid = self.proc.pid
        self._stderr: list[bytes] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def log(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def rss_kib(self, field_name: str = "VmRSS") -> int:
        """A memory figure (kiB) of the process from ``/proc/PID/status``."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field_name} not in /proc/{self.pid}/status")

    def stop(self) -> None:
        stop_process(self.proc, 10)

    def __enter__(self) -> "GatewayProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DemoUpstream:
    """``certgate demo-upstream`` on a free loopback port; it logs every request as a JSON line."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(folder) / "demo-upstream.log"
        self._child = Logged([CERTGATE, "demo-upstream", "--port", str(self.port)], self.log_path)
        self.proc = self._child.proc
        self._child.wait_listening(self.port, 15, "the demo upstream")

    def requests(self) -> list[dict[str, str]]:
        """Every request the upstream received so far: ``{"method", "path", "x-remote-user"}``."""
        return [json.loads(line) for line in read_log(self.log_path).splitlines() if line.startswith("{")]

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests()]

    def stop(self) -> None:
        self._child.stop(5)




class Site(Gateway):
    """A :class:`Gateway` named for failure reports (the browser suite runs several)."""

    def __init__(self, config: Path, name: str) -> None:
        super().__init__(config)
        self.name = name

    def start(self) -> "Site":
        super().start()
        return self

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def audit_has(self, **match: object) -> bool:
        """True when an audit record has every ``key=value`` of ``match``."""
        return any(all(ev.get(k) == v for k, v in match.items()) for ev in self.audit())

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def report(self) -> str:
        """The log tail and the last audit records, for an assertion message."""
        audit = "\n".join(json.dumps(ev) for ev in self.audit()[-30:]) or "(none)"
        return (f"--- certgate {self.name}: log tail ---\n{self.log_tail()}\n"
                f"--- certgate {self.name}: audit ---\n" + audit)
