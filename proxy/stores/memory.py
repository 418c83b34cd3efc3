"""An in-process session store: fast, lost at exit, not shared between worker processes.

Use it for tests and single-process setups that accept losing sessions at restart. A lock
makes every method of :class:`MemoryEngine` atomic even if called from several threads;
:class:`MemoryStore` is its asynchronous face (every Deferred has fired when returned).
"""

from __future__ import annotations

import builtins
import threading
from typing import Any

from proxy.stores.asynchronous import ImmediateStore
from proxy.stores.interface import (REPLACED, LimitReached, SessionRecord, StoreError, check_update_fields,
                                    pick_replaced, record_expiry, touched)

_FAILURE_KEEP = 31 * 86400.0


class MemoryEngine:
    """:class:`proxy.stores.interface.IBlockingStore` in a dict."""

    kind = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, SessionRecord] = {}
        self._failures: dict[str, list[float]] = {}
        self._totp: dict[str, int] = {}
        self._once: dict[tuple[str, str], float] = {}
        self._stash: dict[tuple[str, str], tuple[str, float]] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory store: used after close()")

    # sessions ------------------------------------------------------------------
    def create(self, rec: SessionRecord, *, limit: int = 0, replace: bool = False) -> list[str]:
        with self._lock:
            self._check_open()
            if rec.id in self._sessions:
                raise StoreError(f"memory store: session id {rec.id[:8]}... already exists")
            gone: list[str] = []
            if limit > 0:
                live = [r for r in self._sessions.values() if r.account == rec.account and r.ended is None]
                old = pick_replaced(live, limit)
                if old and not replace:
                    raise LimitReached(rec.account, len(live))
                for r in old:
                    self._sessions[r.id] = r.with_(ended=REPLACED, last_seen=max(r.last_seen, rec.created_at))
                    gone.append(r.id)
            self._sessions[rec.id] = rec
            return gone

    def get_many(self, session_ids: list[str]) -> dict[str, SessionRecord | None]:
        with self._lock:
            self._check_open()
            return {i: self._sessions.get(i) for i in session_ids}

    def get(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            self._check_open()
            return self._sessions.get(session_id)

    def update(self, session_id: str, **fields: Any) -> SessionRecord | None:
        check_update_fields(fields)
        if "methods" in fields:
            fields["methods"] = tuple(fields["methods"])
        with self._lock:
            self._check_open()
            rec = self._sessions.get(session_id)
            if rec is None:
                return None
            rec = rec.with_(**fields)
            self._sessions[session_id] = rec
            return rec

    def touch(self, session_id: str, *, proved_at: float, last_seen: float, client_ip: str,
              long_grace: float) -> SessionRecord | None:
        with self._lock:
            self._check_open()
            rec = self._sessions.get(session_id)
            if rec is None or rec.ended is not None:
                return rec
            rec = touched(rec, proved_at=proved_at, last_seen=last_seen, client_ip=client_ip,
                          long_grace=long_grace)
            self._sessions[session_id] = rec
            return rec

    def delete(self, session_id: str) -> bool:
        with self._lock:
            self._check_open()
            return self._sessions.pop(session_id, None) is not None

    def list(self) -> list[SessionRecord]:
        with self._lock:
            self._check_open()
            return list(self._sessions.values())

    def delete_where(self, *, account: str | None = None, fingerprint: str | None = None) -> builtins.list[str]:
        if account is None and fingerprint is None:
            raise ValueError("delete_where needs account and/or fingerprint")
        with self._lock:
            self._check_open()
            gone = [r.id for r in self._sessions.values()
                    if (account is None or r.account == account)
                    and (fingerprint is None or r.fingerprint == fingerprint)]
            for sid in gone:
                del self._sessions[sid]
            return gone

    # login state ---------------------------------------------------------------
    def incr_failure(self, key: str, now: float, window: float) -> int:
        with self._lock:
            self._check_open()
            kept = [t for t in self._failures.get(key, []) if t > now - window]
            kept.append(now)
            self._failures[key] = kept
            return len(kept)

    def failures(self, key: str, now: float, window: float) -> int:
        with self._lock:
            self._check_open()
            return sum(1 for t in self._failures.get(key, []) if now - window < t <= now)

    def reset_failures(self, key: str) -> None:
        with self._lock:
            self._check_open()
            self._failures.pop(key, None)

    def use_totp_step(self, account: str, step: int) -> bool:
        with self._lock:
            self._check_open()
            last = self._totp.get(account)
            if last is not None and step <= last:
                return False
            self._totp[account] = step
            return True

    def consume_once(self, namespace: str, item_id: str, expires_at: float) -> bool:
        with self._lock:
            self._check_open()
            k = (namespace, item_id)
            if k in self._once:
                return False
            self._once[k] = expires_at
            return True

    def stash(self, namespace: str, item_id: str, value: str, expires_at: float) -> None:
        with self._lock:
            self._check_open()
            self._stash[(namespace, item_id)] = (value, expires_at)

    def unstash(self, namespace: str, item_id: str, now: float) -> str | None:
        with self._lock:
            self._check_open()
            got = self._stash.pop((namespace, item_id), None)
            return got[0] if got is not None and now < got[1] else None

    def take_slot(self, namespace: str, item_id: str, now: float, expires_at: float, cap: int) -> int:
        with self._lock:
            self._check_open()
            slots = self._slots.setdefault(namespace, {})
            for k in [k for k, exp in slots.items() if exp <= now]:
                del slots[k]
            n = len(slots)
            if n >= cap:
                return -1
            slots[item_id] = expires_at
            return n

    def release_slot(self, namespace: str, item_id: str) -> None:
        with self._lock:
            self._check_open()
            self._slots.get(namespace, {}).pop(item_id, None)

    def ping(self) -> None:
        with self._lock:
            self._check_open()

    def purge(self, now: float) -> int:
        with self._lock:
            self._check_open()
            for k in [k for k, (_, exp) in self._stash.items() if exp <= now]:
                del self._stash[k]
            gone = [sid for sid, r in self._sessions.items() if record_expiry(r) <= now]
            for sid in gone:
                del self._sessions[sid]
            for k in [k for k, exp in self._once.items() if exp < now]:
                del self._once[k]
            for key in list(self._failures):
                kept = [t for t in self._failures[key] if t > now - _FAILURE_KEEP]
                if kept:
                    self._failures[key] = kept
                else:
                    del self._failures[key]
            return len(gone)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def __repr__(self) -> str:
        return "MemoryEngine()"


class MemoryStore(ImmediateStore):
    """:class:`proxy.stores.interface.ISessionStore` on a :class:`MemoryEngine` (``engine``).

    Operations run at once on the calling thread; the Deferred returned has already fired."""

    kind = "memory"

    def __init__(self, engine: MemoryEngine | None = None) -> None:
        super().__init__(engine if engine is not None else MemoryEngine(), "memory store")

    def __repr__(self) -> str:
        return "MemoryStore()"
