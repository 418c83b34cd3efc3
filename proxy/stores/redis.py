"""A Redis session store for several gateways sharing sessions: the two drivers.

Every operation is written once, as a generator of Redis commands
(:class:`proxy.stores.redis_ops.RedisOps`, which also describes the key layout), and run by two
drivers: :class:`RedisEngine` (redis-py, blocking: the command line tools) and
:class:`RedisStore` (txredisapi on the reactor: the gateway). txredisapi is the Twisted-native
client: a connection pool, reconnection with exponential backoff (Twisted's ClientService),
a reply timeout that drops a connection to a server that stopped answering, TLS, AUTH with an
ACL user, and Sentinel discovery. URLs, the password file and TLS: :mod:`proxy.stores.redis_target`.
"""

from __future__ import annotations

import builtins
import time
from pathlib import Path
from typing import Any, Callable

from proxy.stores.asynchronous import DEFAULT_DEADLINE, DEFAULT_MAX_QUEUE, StoreMonitor, _EngineStore
from proxy.stores.interface import SessionRecord, StoreError
from proxy.stores.redis_ops import ALL_OPS, Cmd, Op, RedisOps
from proxy.stores.redis_sentinel import MASTER_CHECK_INTERVAL
from proxy.stores.redis_target import parse_url, read_password, tls_options


class RedisEngine:
    """:class:`proxy.stores.interface.IBlockingStore` on Redis through redis-py (command line tools)."""

    kind = "redis"
    # the operations of IBlockingStore, each set below from its RedisOps generator (_engine_op)
    create: Callable[..., builtins.list[str]]
    get: Callable[..., SessionRecord | None]
    get_many: Callable[..., dict[str, SessionRecord | None]]
    update: Callable[..., SessionRecord | None]
    touch: Callable[..., SessionRecord | None]
    delete: Callable[..., bool]
    list: Callable[..., builtins.list[SessionRecord]]
    delete_where: Callable[..., builtins.list[str]]
    incr_failure: Callable[..., int]
    failures: Callable[..., int]
    reset_failures: Callable[..., None]
    use_totp_step: Callable[..., bool]
    consume_once: Callable[..., bool]
    stash: Callable[..., None]
    unstash: Callable[..., str | None]
    take_slot: Callable[..., int]
    release_slot: Callable[..., None]
    purge: Callable[..., int]
    ping: Callable[..., None]

    def __init__(self, url: str, *, prefix: str = "certgate:", wall: Callable[[], float] = time.time,
                 socket_timeout: float = 5.0, password_file: str | Path | None = None,
                 ca_file: str | Path | None = None) -> None:
        import redis
        import redis.sentinel

        self._redis_mod = redis
        self.url = url
        self.target = parse_url(url)
        self._safe_url = self.target.safe()
        self.prefix = prefix
        self._ops = RedisOps(prefix, wall)
        password = read_password(password_file)
        t = self.target
        common: dict[str, Any] = dict(username=t.username, password=password, socket_timeout=socket_timeout,
                                      socket_connect_timeout=socket_timeout, db=t.db)
        try:
            if t.scheme == "redis+sentinel":
                sentinel = redis.sentinel.Sentinel(list(t.hosts), socket_timeout=socket_timeout)
                self._r = sentinel.master_for(t.service, **common)
            else:
                tls: dict[str, Any] = dict(ssl=True, ssl_ca_certs=str(ca_file) if ca_file else None,
                                           ssl_cert_reqs="required", ssl_check_hostname=True) if t.tls else {}
                self._r = redis.Redis(host=t.hosts[0][0], port=t.hosts[0][1], **common, **tls)
            self._r.ping()
        except (redis.RedisError, ValueError, OSError) as e:
            raise StoreError(f"redis store {self._safe_url}: {e}") from None

    def __repr__(self) -> str:
        return f"RedisEngine({self._safe_url!r})"

    def _drive(self, gen: Op) -> Any:
        try:
            cmd = next(gen)
            while True:
                cmd = gen.send(self._r.execute_command(*cmd))
        except StopIteration as stop:
            return stop.value
        except self._redis_mod.RedisError as e:
            raise StoreError(f"redis store {self._safe_url}: {type(e).__name__}: {e}") from None

    def ttl(self, kind: str, name: str) -> int:
        """The remaining TTL of one of this store's keys (-2 missing, -1 none); for tests and diagnostics."""
        return self._drive(self._ops.ttl_of(kind, name))

    def close(self) -> None:
        try:
            self._r.close()
        except self._redis_mod.RedisError:
            pass


def _engine_op(name: str) -> Callable[..., Any]:
    def call(self: RedisEngine, *args: Any, **kwargs: Any) -> Any:
        return self._drive(getattr(self._ops, name)(*args, **kwargs))
    call.__name__ = name
    return call


for _n in ALL_OPS:
    setattr(RedisEngine, _n, _engine_op(_n))


class RedisStore(_EngineStore):
    """:class:`proxy.stores.interface.ISessionStore` on Redis through txredisapi, on the reactor.

    Guarantees: nothing blocks; every operation's Deferred fires within ``deadline`` seconds
    (StoreError when Redis is unreachable, stopped or slow; at once when no connection is up,
    or when ``max_queue`` operations are already in flight). A connection that got no reply
    within the deadline is dropped and re-opened with backoff (0.1 s doubling to 10 s). With
    Sentinel, every ``sentinel_check`` seconds the Sentinels are asked for the master and the
    connections to any other server are closed (:mod:`proxy.stores.redis_sentinel`). Does
    not guarantee that an operation reported as failed did not reach Redis.
    """

    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "certgate:", wall: Callable[[], float] = time.time,
                 clock: Any = None, deadline: float = DEFAULT_DEADLINE, max_queue: int = DEFAULT_MAX_QUEUE,
                 pool_size: int = 4, password_file: str | Path | None = None,
                 ca_file: str | Path | None = None, sentinel_check: float = MASTER_CHECK_INTERVAL) -> None:
        import txredisapi

        if clock is None:
            from twisted.internet import reactor as clock
        self.url = url
        self.target = t = parse_url(url)
        self._safe_url = t.safe()
        super().__init__(None, f"redis store {self._safe_url}", StoreMonitor(clock, f"redis store {self._safe_url}"))
        self._txr = txredisapi
        self._clock = clock
        self.prefix = prefix
        self._ops = RedisOps(prefix, wall)
        self.deadline = float(deadline)
        self.max_queue = int(max_queue)
        self.pending = 0
        self._closed = False
        password = read_password(password_file)
        opts: dict[str, Any] = dict(dbid=t.db, poolsize=pool_size, password=password, username=t.username,
                                    replyTimeout=self.deadline, convertNumbers=False, charset="utf-8")
        self._watch = None
        if t.scheme == "redis+sentinel":
            from twisted.internet import reactor

            from proxy.stores.redis_sentinel import MasterWatch, resolver

            # a Sentinel that stops answering has its connection dropped and re-opened, like a server
            self._sentinel = txredisapi.Sentinel(list(t.hosts), connectTimeout=self.deadline,
                                                 replyTimeout=self.deadline)
            self._sentinel.discovery_timeout = self.deadline
            self._conn = self._sentinel.master_for(t.service, **opts)
            # connections to a master that the Sentinels replaced are closed even while idle
            self._watch = MasterWatch(clock, lambda: self._sentinel.discover_master(t.service),
                                      lambda: list(self._conn._factory.pool), resolver(reactor), self.name,
                                      sentinel_check)
            self._watch.start()
        else:
            self._sentinel = None
            tls: Any = False
            if t.tls:
                tls = tls_options(t.hosts[0][0], ca_file)
            self._conn = txredisapi.lazyConnectionPool(t.hosts[0][0], t.hosts[0][1], reconnect=True,
                                                       connectTimeout=self.deadline, ssl_context_factory=tls,
                                                       **opts)
        factory = self._conn._factory
        factory.initialDelay = 0.1  # reconnect quickly after an outage; ClientService doubles it
        factory.maxDelay = 10.0
        # txredisapi gives up for good when AUTH or SELECT fails on a new connection, and a server
        # that is paused (or still loading) makes them time out: keep retrying with backoff
        # instead (a wrong password is logged at every attempt); close() still stops it.
        give_up = factory.stopTrying
        from twisted.internet.defer import succeed

        factory.stopTrying = lambda: give_up() if self._closed else succeed(None)

    def __repr__(self) -> str:
        return f"RedisStore({self._safe_url!r})"

    def connected(self) -> int:
        """How many pool connections are up (ready for commands)."""
        return len(self._conn._factory.pool)

    def servers(self) -> list[tuple[str, int]]:
        """(host, port) of the server of each pool connection that is up (diagnostics and tests)."""
        peers = (c.transport.getPeer() for c in list(self._conn._factory.pool) if c.transport is not None)
        return [(p.host, p.port) for p in peers if hasattr(p, "port")]

    def _submit(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from twisted.internet.defer import Deferred, fail

        if self._closed:
            return self.monitor.watch(op, fail(StoreError(f"{self.name}: used after close()")))
        if not self.connected():
            return self.monitor.watch(op, fail(StoreError(f"{self.name}: not connected (reconnecting)")))
        if self.pending >= self.max_queue:
            return self.monitor.watch(op, fail(StoreError(f"{self.name}: {self.pending} operations in flight")))
        try:
            gen = getattr(self._ops, op)(*args, **kwargs)
            first = next(gen)
        except StopIteration as stop:
            from twisted.internet.defer import succeed
            return self.monitor.watch(op, succeed(stop.value))
        except Exception:
            return self.monitor.watch(op, fail())
        self.pending += 1
        d: Deferred[Any] = Deferred()
        timer = self._clock.callLater(self.deadline, self._late, d, op)

        def finish() -> None:
            self.pending -= 1
            if timer.active():
                timer.cancel()

        def step(cmd: Cmd) -> None:
            if d.called:  # late: do not send the rest
                finish()
                return
            self._conn.execute_command(*cmd).addCallbacks(got, failed)

        def got(reply: Any) -> None:
            try:
                nxt = gen.send(reply)
            except StopIteration as stop:
                finish()
                if not d.called:
                    d.callback(stop.value)
                return
            except Exception:
                finish()
                if not d.called:
                    d.errback()
                return
            step(nxt)

        def failed(f: Any) -> None:
            finish()
            if not d.called:
                d.errback(StoreError(f"{self.name}: {f.type.__name__}: {f.getErrorMessage()}"))

        step(first)
        return self.monitor.watch(op, d)

    def _late(self, d: Any, op: str) -> None:
        if not d.called:
            d.errback(StoreError(f"{self.name}: {op} did not finish within {self.deadline:g} s"))

    def ttl(self, kind: str, name: str) -> Any:
        """The remaining TTL of one of this store's keys, as a Deferred (tests and diagnostics)."""
        return self._submit("ttl_of", (kind, name), {})

    def close(self) -> Any:
        """Stop reconnecting and close every connection; a Deferred firing when they are closed."""
        from twisted.internet.defer import DeferredList, succeed

        if self._closed:
            return succeed(None)
        self._closed = True
        if self._watch is not None:
            self._watch.stop()
        ds = [self._conn.disconnect()]
        if self._sentinel is not None:
            ds.append(self._sentinel.disconnect())
        return DeferredList(ds, consumeErrors=True)
