"""A Redis session store (``redis://HOST:PORT/DB``) for several gateways sharing sessions.

Layout under a key prefix (default ``certgate:``):

- ``s:<id>``: the session record as JSON; read-modify-writes (``update``, ``touch``) are
  optimistic transactions (``WATCH``/``MULTI``/``EXEC``, retried on conflict), so floats
  are formatted by Python, never by Lua;
- ``f:<key>``: a sorted set of failure times (``ZREMRANGEBYSCORE`` + ``ZADD`` + ``ZCOUNT`` in
  one ``MULTI``), expiring after the window;
- ``t:<account>``: the last used TOTP step, set by a Lua compare-and-set, never expiring;
- ``o:<ns>:<id>``: single-use ids, ``SET NX`` with a TTL.

Keys expire by themselves: a TTL derived from :func:`record_expiry` (or ``expires_at``)
minus the gateway's wall clock, at least :data:`MIN_TTL` seconds, so clock skew between
gateways and Redis only shifts housekeeping, never a session rule (those use the stored
times). ``purge`` is therefore a no-op here.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from proxy.stores.interface import (SessionRecord, StoreError, check_update_fields, record_expiry,
                                    record_from_json, record_to_json, touched)

MIN_TTL = 60
_TOTP_CAS = """
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


class RedisStore:
    """:class:`proxy.stores.interface.ISessionStore` on Redis (redis-py)."""

    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "certgate:", wall: Callable[[], float] = time.time,
                 socket_timeout: float = 5.0) -> None:
        import redis

        self._redis_mod = redis
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise StoreError(f"redis store {url!r}: expected redis://HOST:PORT/DB")
        self.url = url
        self._safe_url = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
        self.prefix = prefix
        self._wall = wall
        try:
            self._r = redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
            self._r.ping()
        except (redis.RedisError, ValueError) as e:
            raise StoreError(f"redis store {self._safe_url}: {e}") from None
        self._totp_cas = self._r.register_script(_TOTP_CAS)

    def __repr__(self) -> str:
        return f"RedisStore({self._safe_url!r})"

    # ------------------------------------------------------------------ helpers
    def _k(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    def _ttl(self, until: float) -> int:
        return max(MIN_TTL, int(math.ceil(until - self._wall())))

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._redis_mod.RedisError as e:
            raise StoreError(f"redis store {self._safe_url}: {type(e).__name__}: {e}") from None

    def _rewrite(self, session_id: str, change: Callable[[SessionRecord], SessionRecord]) -> SessionRecord | None:
        key = self._k("s", session_id)

        def txn() -> SessionRecord | None:
            with self._r.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(key)
                        raw = pipe.get(key)
                        if raw is None:
                            pipe.unwatch()
                            return None
                        rec = change(record_from_json(raw))
                        pipe.multi()
                        pipe.set(key, record_to_json(rec), ex=self._ttl(record_expiry(rec)))
                        pipe.execute()
                        return rec
                    except self._redis_mod.WatchError:
                        continue
        return self._call(txn)

    # ------------------------------------------------------------------ sessions
    def create(self, rec: SessionRecord) -> None:
        ok = self._call(lambda: self._r.set(self._k("s", rec.id), record_to_json(rec), nx=True,
                                            ex=self._ttl(record_expiry(rec))))
        if not ok:
            raise StoreError(f"redis store {self._safe_url}: session id {rec.id[:8]}... already exists")

    def get(self, session_id: str) -> SessionRecord | None:
        raw = self._call(lambda: self._r.get(self._k("s", session_id)))
        return None if raw is None else record_from_json(raw)

    def update(self, session_id: str, **fields: Any) -> SessionRecord | None:
        check_update_fields(fields)
        if "methods" in fields:
            fields["methods"] = tuple(fields["methods"])
        return self._rewrite(session_id, lambda r: r.with_(**fields))

    def touch(self, session_id: str, *, proved_at: float, last_seen: float, client_ip: str,
              long_grace: float) -> SessionRecord | None:
        def change(rec: SessionRecord) -> SessionRecord:
            return touched(rec, proved_at=proved_at, last_seen=last_seen, client_ip=client_ip,
                           long_grace=long_grace)
        return self._rewrite(session_id, change)

    def get_many(self, session_ids: list[str]) -> dict[str, SessionRecord | None]:
        """Several records in one ``MGET`` (the manager's sweep uses it when present)."""
        if not session_ids:
            return {}
        raws = self._call(lambda: self._r.mget([self._k("s", i) for i in session_ids]))
        return {i: (None if raw is None else record_from_json(raw)) for i, raw in zip(session_ids, raws)}

    def delete(self, session_id: str) -> bool:
        return bool(self._call(lambda: self._r.delete(self._k("s", session_id))))

    def list(self) -> list[SessionRecord]:
        def fn() -> list[SessionRecord]:
            keys = list(self._r.scan_iter(match=self._k("s", "*"), count=500))
            out: list[SessionRecord] = []
            for i in range(0, len(keys), 500):
                for raw in self._r.mget(keys[i:i + 500]):
                    if raw is not None:  # expired between SCAN and MGET
                        out.append(record_from_json(raw))
            return out
        return self._call(fn)

    def delete_where(self, *, account: str | None = None, fingerprint: str | None = None) -> list[str]:
        if account is None and fingerprint is None:
            raise ValueError("delete_where needs account and/or fingerprint")
        gone = []
        for rec in self.list():
            if (account is None or rec.account == account) and (fingerprint is None or rec.fingerprint == fingerprint):
                if self.delete(rec.id):
                    gone.append(rec.id)
        return gone

    # ------------------------------------------------------------------ login state
    def incr_failure(self, key: str, now: float, window: float) -> int:
        k = self._k("f", key)

        def fn() -> int:
            pipe = self._r.pipeline(transaction=True)
            pipe.zremrangebyscore(k, "-inf", now - window)
            pipe.zadd(k, {f"{now!r}:{secrets.token_hex(6)}": now})
            pipe.zcount(k, f"({now - window!r}", now)
            pipe.expire(k, max(1, int(math.ceil(window)) + 1))
            return int(pipe.execute()[2])
        return self._call(fn)

    def failures(self, key: str, now: float, window: float) -> int:
        return int(self._call(lambda: self._r.zcount(self._k("f", key), f"({now - window!r}", now)))

    def reset_failures(self, key: str) -> None:
        self._call(lambda: self._r.delete(self._k("f", key)))

    def use_totp_step(self, account: str, step: int) -> bool:
        return bool(self._call(lambda: self._totp_cas(keys=[self._k("t", account)], args=[int(step)])))

    def consume_once(self, namespace: str, item_id: str, expires_at: float) -> bool:
        return bool(self._call(lambda: self._r.set(self._k("o", f"{namespace}:{item_id}"), b"1", nx=True,
                                                   ex=self._ttl(expires_at))))

    def purge(self, now: float) -> int:
        """Redis expires keys itself; nothing to do."""
        return 0

    def ttl(self, kind: str, name: str) -> int:
        """The remaining TTL of one of this store's keys (-2 missing, -1 none); for tests and diagnostics."""
        return int(self._call(lambda: self._r.ttl(self._k(kind, name))))

    def close(self) -> None:
        try:
            self._r.close()
        except self._redis_mod.RedisError:
            pass
