"""A Redis session store for several gateways sharing sessions.

URLs: ``redis://[USER@]HOST:PORT/DB``, ``rediss://...`` (TLS, server certificate verified
against ``ca`` or the system store), ``redis+sentinel://[USER@]HOST:PORT[,HOST:PORT...]/SERVICE/DB``
(the master of SERVICE as the Sentinels say; after a failover the next connection goes to
the new master, and connections still open to the old one are closed within a second). The
password comes from a file (``password_file``), never from the URL.

Layout under a key prefix (default ``certgate:``):

- ``s:<id>``: the session record as JSON; read-modify-writes (``update``, ``touch``) read
  the record, compute the new one in Python (so floats are formatted by Python, never by
  Lua) and write it with a Lua compare-and-set on the exact old text, retried on conflict;
- ``a:<account>``: the set of the account's session ids (for ``max_per_account``: a
  limited ``create`` checks and writes the set and every member in one Lua script);
- ``f:<key>``: a sorted set of failure times (one Lua script: trim, add, count, expire);
- ``t:<account>``: the last used TOTP step, set by a Lua compare-and-set, never expiring;
- ``o:<ns>:<id>``: single-use ids, ``SET NX`` with a TTL;
- ``p:<ns>:<id>``: stashed pending-login state, taken with ``GETDEL``;
- ``m:<ns>``: a sorted set of pending-login slots (MaxStartups) by expiry, taken by a Lua script.

Keys expire by themselves: a TTL derived from :func:`record_expiry` (or ``expires_at``)
minus the gateway's wall clock, at least :data:`MIN_TTL` seconds, so clock skew between
gateways and Redis only shifts housekeeping, never a session rule. ``purge`` is a no-op.

Every operation is written once, as a generator of Redis commands (:class:`_Ops`), and run
by two drivers: :class:`RedisEngine` (redis-py, blocking: the command line tools) and
:class:`RedisStore` (txredisapi on the reactor: the gateway). txredisapi is the Twisted-native
client: a connection pool, reconnection with exponential backoff (Twisted's ClientService),
a reply timeout that drops a connection to a server that stopped answering, TLS, AUTH with an
ACL user, and Sentinel discovery.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
import builtins
from typing import Any, Callable, Generator, overload
from urllib.parse import unquote, urlsplit

from proxy.stores.asynchronous import DEFAULT_DEADLINE, DEFAULT_MAX_QUEUE, StoreMonitor, _EngineStore
from proxy.stores.interface import (MAX_RECORD_AGE, REPLACED, LimitReached, SessionRecord, StoreError,
                                    check_update_fields, pick_replaced, record_expiry, record_from_json,
                                    record_to_json, touched)
from proxy.stores.redis_sentinel import MASTER_CHECK_INTERVAL

MIN_TTL = 60
_CAS_RETRIES = 100
_TOTP_CAS = """
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
_SET_IF = """
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
_FAILURE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
local c = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return c
"""
# KEYS: index set, new record, member records...; ARGV: new json, new ttl, new id, index ttl,
# member count n, n member ids, n expected texts ('' = missing), then (position, json, ttl) triples.
_CREATE_LIMITED = """
local n = tonumber(ARGV[5])
if redis.call('SCARD', KEYS[1]) ~= n then return -1 end
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[1], ARGV[5 + i]) == 0 then return -1 end
  local cur = redis.call('GET', KEYS[2 + i]) or ''
  if cur ~= ARGV[5 + n + i] then return -1 end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return -2 end
for i = 1, n do
  if ARGV[5 + n + i] == '' then redis.call('SREM', KEYS[1], ARGV[5 + i]) end
end
local j = 6 + 2 * n
while j + 2 <= #ARGV do
  redis.call('SET', KEYS[2 + tonumber(ARGV[j])], ARGV[j + 1], 'EX', ARGV[j + 2])
  j = j + 3
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('SADD', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[3]) then return -1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return n
"""

Cmd = tuple[Any, ...]
Op = Generator[Cmd, Any, Any]


@overload
def _text(v: bytes | str) -> str: ...
@overload
def _text(v: None) -> None: ...
def _text(v: bytes | str | None) -> str | None:
    return v.decode("utf-8") if isinstance(v, bytes) else v


@dataclass(frozen=True)
class RedisTarget:
    """A parsed store URL: where to connect and how (no secret in it)."""

    scheme: str  # redis | rediss | redis+sentinel
    hosts: tuple[tuple[str, int], ...]
    db: int
    username: str | None = None
    service: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    def safe(self) -> str:
        user = f"{self.username}@" if self.username else ""
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        svc = f"/{self.service}" if self.service else ""
        return f"{self.scheme}://{user}{hosts}{svc}/{self.db}"


def parse_url(url: str) -> RedisTarget:
    """Parse a store URL; StoreError says what is wrong (a password in the URL is refused)."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in ("redis", "rediss", "redis+sentinel"):
        raise StoreError(f"redis store: {scheme!r} is not redis://, rediss:// or redis+sentinel://")
    netloc = parts.netloc
    user = None
    if "@" in netloc:
        cred, netloc = netloc.rsplit("@", 1)
        if ":" in cred:
            raise StoreError("redis store: do not put a password in the URL; use [sessions] redis_password_file")
        user = unquote(cred) or None
    hosts = []
    for hp in netloc.split(","):
        host, _, port = hp.rpartition(":") if hp.count(":") == 1 or hp.startswith("[") else (hp, "", "")
        host = host.strip("[]")
        if not host:
            raise StoreError(f"redis store {url!r}: expected HOST:PORT")
        try:
            hosts.append((host, int(port) if port else (26379 if scheme == "redis+sentinel" else 6379)))
        except ValueError:
            raise StoreError(f"redis store {url!r}: port {port!r} is not a number") from None
    if len(hosts) > 1 and scheme != "redis+sentinel":
        raise StoreError(f"redis store {url!r}: several hosts need redis+sentinel://")
    segs = [s for s in parts.path.split("/") if s]
    service = None
    if scheme == "redis+sentinel":
        if not segs:
            raise StoreError(f"redis store {url!r}: redis+sentinel://HOST:PORT/SERVICE/DB needs the service name")
        service, segs = segs[0], segs[1:]
    try:
        db = int(segs[0]) if segs else 0
    except ValueError:
        raise StoreError(f"redis store {url!r}: database {segs[0]!r} is not a number") from None
    return RedisTarget(scheme, tuple(hosts), db, user, service)


def read_password(path: str | Path | None) -> str | None:
    """The first line of ``path`` (None without a file); StoreError when it cannot be read."""
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise StoreError(f"redis store: cannot read the password file {path}: {e.strerror}") from None
    if not text or not text[0]:
        raise StoreError(f"redis store: the password file {path} is empty")
    return text[0]


class _Ops:
    """Every store operation as a generator of Redis commands; each reply is sent back in."""

    def __init__(self, prefix: str, wall: Callable[[], float]) -> None:
        self.prefix = prefix
        self.wall = wall

    def k(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    def ttl(self, until: float) -> int:
        return max(MIN_TTL, int(math.ceil(until - self.wall())))

    @staticmethod
    def _eval(script: str, keys: list[str], args: list[Any]) -> Cmd:
        return ("EVAL", script, len(keys), *keys, *args)

    def _rewrite(self, session_id: str, change: Callable[[SessionRecord], SessionRecord]) -> Op:
        key = self.k("s", session_id)
        for _ in range(_CAS_RETRIES):
            raw = yield ("GET", key)
            if raw is None:
                return None
            rec = change(record_from_json(raw))
            if rec is not None and (yield self._eval(_SET_IF, [key], [raw, record_to_json(rec),
                                                                      self.ttl(record_expiry(rec))])):
                return rec
        raise StoreError("redis store: a session record kept changing under a read-modify-write")

    def create(self, rec: SessionRecord, *, limit: int = 0, replace: bool = False) -> Op:
        index = self.k("a", rec.account)
        for _ in range(_CAS_RETRIES):
            ids = sorted(_text(i) for i in ((yield ("SMEMBERS", index)) or []))
            raws = list((yield ("MGET", *[self.k("s", i) for i in ids])) if ids else [])
            live = [record_from_json(r) for r in raws if r is not None]
            old = pick_replaced([r for r in live if r.ended is None], limit) if limit > 0 else []
            if old and not replace:
                raise LimitReached(rec.account, len([r for r in live if r.ended is None]))
            triples: list[Any] = []
            for r in old:
                ended = r.with_(ended=REPLACED, last_seen=max(r.last_seen, rec.created_at))
                triples += [ids.index(r.id) + 1, record_to_json(ended), self.ttl(record_expiry(ended))]
            keys = [index, self.k("s", rec.id)] + [self.k("s", i) for i in ids]
            args = [record_to_json(rec), self.ttl(record_expiry(rec)), rec.id, int(MAX_RECORD_AGE), len(ids),
                    *ids, *[(r if r is not None else "") for r in raws], *triples]
            got = yield self._eval(_CREATE_LIMITED, keys, args)
            if int(got) == 1:
                return [r.id for r in old]
            if int(got) == -2:
                raise StoreError(f"redis store: session id {rec.id[:8]}... already exists")
        raise StoreError("redis store: the account's session set kept changing during a login")

    def get(self, session_id: str) -> Op:
        raw = yield ("GET", self.k("s", session_id))
        return None if raw is None else record_from_json(raw)

    def get_many(self, session_ids: list[str]) -> Op:
        if not session_ids:
            return {}
        raws = yield ("MGET", *[self.k("s", i) for i in session_ids])
        return {i: (None if raw is None else record_from_json(raw)) for i, raw in zip(session_ids, raws)}

    def update(self, session_id: str, **fields: Any) -> Op:
        check_update_fields(fields)
        if "methods" in fields:
            fields["methods"] = tuple(fields["methods"])
        return (yield from self._rewrite(session_id, lambda r: r.with_(**fields)))

    def touch(self, session_id: str, *, proved_at: float, last_seen: float, client_ip: str,
              long_grace: float) -> Op:
        def change(rec: SessionRecord) -> SessionRecord:
            return touched(rec, proved_at=proved_at, last_seen=last_seen, client_ip=client_ip,
                           long_grace=long_grace)
        key = self.k("s", session_id)
        raw = yield ("GET", key)
        if raw is None:
            return None
        rec = record_from_json(raw)
        if rec.ended is not None:
            return rec
        return (yield from self._rewrite(session_id, change))

    def delete(self, session_id: str) -> Op:
        raw = yield ("GET", self.k("s", session_id))
        n = yield ("DEL", self.k("s", session_id))
        if raw is not None:
            yield ("SREM", self.k("a", record_from_json(raw).account), session_id)
        return bool(int(n))

    def list(self) -> Op:
        keys: list[Any] = []
        cursor: Any = "0"
        while True:
            cursor, batch = yield ("SCAN", cursor, "MATCH", self.k("s", "*"), "COUNT", 500)
            keys += list(batch)
            if str(_text(cursor)) == "0":
                break
        out: list[SessionRecord] = []
        for i in range(0, len(keys), 500):
            for raw in (yield ("MGET", *keys[i:i + 500])):
                if raw is not None:  # expired between SCAN and MGET
                    out.append(record_from_json(raw))
        return out

    def delete_where(self, *, account: str | None = None, fingerprint: str | None = None) -> Op:
        if account is None and fingerprint is None:
            raise ValueError("delete_where needs account and/or fingerprint")
        gone = []
        for rec in (yield from self.list()):
            if (account is None or rec.account == account) and (fingerprint is None or rec.fingerprint == fingerprint):
                if (yield from self.delete(rec.id)):
                    gone.append(rec.id)
        return gone

    def incr_failure(self, key: str, now: float, window: float) -> Op:
        got = yield self._eval(_FAILURE, [self.k("f", key)], [repr(now - window), repr(now),
                                                               f"{now!r}:{secrets.token_hex(6)}",
                                                               max(1, int(math.ceil(window)) + 1)])
        return int(got)

    def failures(self, key: str, now: float, window: float) -> Op:
        return int((yield ("ZCOUNT", self.k("f", key), f"({now - window!r}", repr(now))))

    def reset_failures(self, key: str) -> Op:
        yield ("DEL", self.k("f", key))
        return None

    def use_totp_step(self, account: str, step: int) -> Op:
        return bool(int((yield self._eval(_TOTP_CAS, [self.k("t", account)], [int(step)]))))

    def consume_once(self, namespace: str, item_id: str, expires_at: float) -> Op:
        got = yield ("SET", self.k("o", f"{namespace}:{item_id}"), "1", "NX", "EX", self.ttl(expires_at))
        return got is not None

    def stash(self, namespace: str, item_id: str, value: str, expires_at: float) -> Op:
        yield ("SET", self.k("p", f"{namespace}:{item_id}"), f"{expires_at!r}|{value}", "EX",
               max(MIN_TTL, int(math.ceil(expires_at - self.wall()))))
        return None

    def unstash(self, namespace: str, item_id: str, now: float) -> Op:
        raw = _text((yield ("GETDEL", self.k("p", f"{namespace}:{item_id}"))))
        if raw is None:
            return None
        until, _, value = raw.partition("|")
        return value if now < float(until) else None

    def purge(self, now: float) -> Op:
        """Redis expires keys itself; nothing to do."""
        return 0
        yield  # pragma: no cover  (a generator)

    def take_slot(self, namespace: str, item_id: str, now: float, expires_at: float, cap: int) -> Op:
        got = yield self._eval(_TAKE_SLOT, [self.k("m", namespace)],
                               [repr(now), repr(expires_at), int(cap), item_id,
                                max(MIN_TTL, int(math.ceil(expires_at - self.wall())))])
        return int(got)

    def release_slot(self, namespace: str, item_id: str) -> Op:
        yield ("ZREM", self.k("m", namespace), item_id)
        return None

    def ping(self) -> Op:
        yield ("PING",)
        return None

    def ttl_of(self, kind: str, name: str) -> Op:
        return int((yield ("TTL", self.k(kind, name))))


_ALL_OPS = ("create", "get", "get_many", "update", "touch", "delete", "list", "delete_where", "incr_failure",
            "failures", "reset_failures", "use_totp_step", "consume_once", "stash", "unstash", "take_slot",
            "release_slot", "purge", "ping")


class RedisEngine:
    """:class:`proxy.stores.interface.IBlockingStore` on Redis through redis-py (command line tools)."""

    kind = "redis"
    # the operations of IBlockingStore, each set below from its _Ops generator (_engine_op)
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
        self._ops = _Ops(prefix, wall)
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


for _n in _ALL_OPS:
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
        self._ops = _Ops(prefix, wall)
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
                tls = _tls_options(t.hosts[0][0], ca_file)
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


def _tls_options(host: str, ca_file: str | Path | None) -> Any:
    """Client TLS for ``rediss://``: the server certificate is verified for ``host`` against
    ``ca_file`` (PEM) or the system trust store."""
    from twisted.internet import ssl

    if ca_file:
        try:
            pem = Path(ca_file).read_bytes()
        except OSError as e:
            raise StoreError(f"redis store: cannot read [sessions] redis_ca {ca_file}: {e.strerror}") from None
        trust: Any = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem)])
    else:
        trust = ssl.platformTrust()
    return ssl.optionsForClientTLS(host, trustRoot=trust)
