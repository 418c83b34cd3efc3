"""A real ``redis-server`` on a free loopback port in a temporary directory, for tests.

``RedisServer().start()`` fails loudly (RuntimeError) when ``redis-server`` is missing or
does not come up; it never skips. ``stop()`` terminates the process it started.
The pytest fixture ``redis_server`` (session scope) is exported for conftest/test modules.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.harness.process import stop_process
from tests.harness.wait import free_port

REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer:
    """One redis-server process (loopback only, protected mode). ``persistent`` keeps every write
    in an append-only file fsynced per write, so a killed and restarted server loses nothing;
    ``extra`` adds command line arguments (TLS, ACL users, replication)."""

    def __init__(self, *, persistent: bool = False, extra: list[str] | None = None) -> None:
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.persistent = persistent
        self.extra = list(extra or [])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        exe = shutil.which("redis-server") or (REDIS_SERVER if Path(REDIS_SERVER).exists() else None)
        if exe is None:
            raise RuntimeError("redis-server not found: install Debian's redis-server (apt-get install redis-server)")
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="certgate-redis-"))
            self.port = free_port()
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             *aof, "--daemonize", "no", "--logfile", str(self.dir / "redis.log"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        wait = threading.Event()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace") if (self.dir / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {log[-2000:]}")
            if self.ready():
                return self
            wait.wait(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port} within {timeout} s")

    def ready(self) -> bool:
        """True when the server answers PING (or NOAUTH: it is up, it wants a password)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing."""
        import signal

        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, keeping the data directory and port for :meth:`start` again."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        stop_process(self.proc, 5, continue_first=True)  # a paused server cannot act on SIGTERM
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
