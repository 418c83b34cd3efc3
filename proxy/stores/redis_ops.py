"""Every Redis store operation, written once as a generator of Redis commands.

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

A generator yields each command and is sent its reply; it does no I/O itself. The drivers
in :mod:`proxy.stores.redis` run it (blocking, or on the reactor).
"""

from __future__ import annotations

import math
import secrets
from typing import Any, Callable, Generator, overload

from proxy.stores.interface import (MAX_RECORD_AGE, REPLACED, LimitReached, SessionRecord, StoreError,
                                    check_update_fields, pick_replaced, record_expiry, record_from_json,
                                    record_to_json, touched)

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


class RedisOps:
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


ALL_OPS = ("create", "get", "get_many", "update", "touch", "delete", "list", "delete_where", "incr_failure",
           "failures", "reset_failures", "use_totp_step", "consume_once", "stash", "unstash", "take_slot",
           "release_slot", "purge", "ping")
