"""A real ``redis-server`` on a free loopback port in a temporary directory, for tests; and a
real ``redis-sentinel`` monitoring one (``RedisSentinel``).

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

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_SENTINEL = "/usr/bin/redis-sentinel"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def replication(self) -> dict:
        """``INFO replication`` of this server (redis-py)."""
        import redis

        with redis.Redis(port=self.port, socket_timeout=2) as r:
            return r.info("replication")

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            import signal

            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def wait_replicated(master: RedisServer, replica: RedisServer, timeout: float = 10.0) -> None:
    """Return once ``replica`` has processed every write ``master`` had when this was called
    (replication offsets: a WAIT on a fresh connection would not cover other clients' writes);
    AssertionError after ``timeout`` s."""
    wanted = master.replication()["master_repl_offset"]
    deadline = time.monotonic() + timeout
    wait = threading.Event()
    while True:
        info = replica.replication()
        if info.get("master_link_status") == "up" and info.get("slave_repl_offset", -1) >= wanted:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the replica on {replica.port} did not reach offset {wanted} within {timeout} s: {info}")
        wait.wait(0.05)


class RedisSentinel:
    """One redis-sentinel process (loopback) monitoring the master on ``master_port`` as
    ``service`` with quorum 1 and short timeouts: the master is subjectively (and, with one
    Sentinel, objectively) down after ``down_after_ms`` without a valid reply."""

    def __init__(self, master_port: int, *, service: str = "certgate", down_after_ms: int = 500,
                 failover_timeout_ms: int = 3000) -> None:
        self.master_port = master_port
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The certgate store URL naming this Sentinel and its service, database 0."""
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/0"

    def start(self, timeout: float = 10.0) -> "RedisSentinel":
        exe = shutil.which("redis-sentinel") or (REDIS_SENTINEL if Path(REDIS_SENTINEL).exists() else None)
        if exe is None:
            raise RuntimeError("redis-sentinel not found: install Debian's redis-sentinel "
                               "(apt-get install redis-sentinel)")
        self.dir = Path(tempfile.mkdtemp(prefix="certgate-sentinel-"))
        self.port = free_port()
        conf = self.dir / "sentinel.conf"  # Sentinel rewrites its own config file: it must be writable
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.dir / 'sentinel.log'}\n"
                        f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} 1\n"
                        f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                        f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n")
        self.proc = subprocess.Popen([exe, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        wait = threading.Event()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-sentinel exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                if self.master() == ("127.0.0.1", self.master_port):
                    return self
            except OSError:
                pass
            wait.wait(0.05)
        self.stop()
        raise RuntimeError(f"redis-sentinel did not answer on 127.0.0.1:{self.port} within {timeout} s")

    def command(self, *args: str) -> object:
        """One command to this Sentinel (redis-py); raises OSError when it does not answer."""
        import redis

        r = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
        try:
            return r.execute_command(*args)
        except redis.RedisError as e:
            raise OSError(f"sentinel on {self.port}: {e}") from None
        finally:
            r.close()

    def master(self) -> tuple[str, int] | None:
        """The master's address as this Sentinel reports it now."""
        got = self.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return (got[0], int(got[1])) if got else None  # type: ignore[index]

    def replicas_ready(self) -> list[int]:
        """Ports of the replicas this Sentinel knows with no down flag and an established link to
        their master (the ones it could promote)."""
        rows = self.command("SENTINEL", "REPLICAS", self.service)
        out = []
        for row in rows:  # type: ignore[union-attr]
            d = dict(zip(row[::2], row[1::2])) if isinstance(row, list) else row
            if "down" not in d.get("flags", "") and d.get("master-link-status") == "ok":
                out.append(int(d["port"]))
        return out

    def log(self) -> str:
        try:
            return (self.dir / "sentinel.log").read_text(errors="replace") if self.dir else ""
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
