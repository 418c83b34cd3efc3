"""The session store contract: trusted sessions plus the login engine's small durable state.

A store keeps :class:`SessionRecord` values by id, and the counters the login needs to be
safe across restarts (failure counters, last used TOTP step, single-use ids). Every method
is atomic on its own: ``update`` is a read-modify-write that cannot interleave with another
``update`` of the same record, ``use_totp_step`` and ``consume_once`` are compare-and-set.

Stores do not interpret session times (the :class:`proxy.sessions.manager.SessionManager` does);
they only drop records whose ``expire_at`` hint (see :func:`record_expiry`) has passed, to
bound their size. Times are epoch seconds from the injected clock, never read here.
Each store has two faces: :class:`IBlockingStore` (an *engine*, for the command line tools
and worker threads) and :class:`ISessionStore`, where every operation returns a Deferred
(txacme's store interface is the model), which is all the gateway uses on the reactor.
Implementations: :mod:`proxy.stores.memory`, :mod:`proxy.stores.sqlite`,
:mod:`proxy.stores.redis`; one conformance test mixin runs against every face of all three.
"""

from __future__ import annotations

import base64
import builtins
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred

    from proxy.observe.seams import MetricsRegistry


class StoreError(Exception):
    """A store could not be opened or used; the message says which store and why."""


def retry_after(deadline: float) -> bytes:
    """The ``Retry-After`` seconds of a 503 ``session-store-unavailable``: the store's ``deadline``
    (``[sessions] store_deadline``) rounded up, at least 1."""
    return str(max(1, math.ceil(float(deadline)))).encode("ascii")


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One trusted session.

    ``fingerprint`` is the lower-case hex SHA-256 of the certificate the session is bound to;
    ``cert_der``/``chain_der`` keep that certificate and its chain so the sessions can be
    re-verified after a trust-store reload. ``proved_at`` is the time of the last full TLS
    handshake on which that certificate was presented by a request of this session.
    ``long_until`` is 0.0 without a long trusted session, else the time it was activated
    *plus* the long grace at activation (an upper bound; the manager re-derives the end).
    ``ended`` is a reason code once the session was ended (tombstone), else None.
    """

    id: str
    account: str
    fingerprint: str
    cert_der: bytes
    chain_der: tuple[bytes, ...]
    created_at: float
    proved_at: float
    last_seen: float
    long_until: float = 0.0
    methods: tuple[str, ...] = ()
    client_ip: str = ""
    ended: str | None = None

    def with_(self, **changes: Any) -> "SessionRecord":
        """A copy with ``changes`` applied (unknown field names raise TypeError)."""
        return replace(self, **changes)


FIELD_NAMES = frozenset(f.name for f in fields(SessionRecord))
#: fields ``update`` may change (the id and the certificate binding never change)
MUTABLE_FIELDS = frozenset({"proved_at", "last_seen", "long_until", "client_ip", "ended", "methods"})


def check_update_fields(fields_: dict[str, Any]) -> None:
    """Raise ValueError naming the field when ``update`` is asked to change an immutable/unknown one."""
    for k in fields_:
        if k not in MUTABLE_FIELDS:
            why = "is not a SessionRecord field" if k not in FIELD_NAMES else "cannot be changed after creation"
            raise ValueError(f"session update: field {k!r} {why}")


def touched(rec: SessionRecord, *, proved_at: float, last_seen: float, client_ip: str,
            long_grace: float) -> SessionRecord:
    """``rec`` after a request: proof and activity only move forward; an active long
    trusted session extends from the newest proof. Ended records are returned unchanged."""
    if rec.ended is not None:
        return rec
    proved = max(rec.proved_at, proved_at)
    long_until = max(rec.long_until, proved + long_grace) if rec.long_until > 0 else 0.0
    return rec.with_(proved_at=proved, last_seen=max(rec.last_seen, last_seen), client_ip=client_ip,
                     long_until=long_until)


def record_to_json(rec: SessionRecord) -> str:
    """Serialise a record (bytes as base64) for stores that keep text."""
    d = asdict(rec)
    d["cert_der"] = base64.b64encode(rec.cert_der).decode("ascii")
    d["chain_der"] = [base64.b64encode(c).decode("ascii") for c in rec.chain_der]
    d["methods"] = list(rec.methods)
    return json.dumps(d, separators=(",", ":"))


def record_from_json(text: str | bytes) -> SessionRecord:
    """The inverse of :func:`record_to_json`; raises StoreError on malformed data."""
    try:
        d = json.loads(text)
        d["cert_der"] = base64.b64decode(d["cert_der"])
        d["chain_der"] = tuple(base64.b64decode(c) for c in d["chain_der"])
        d["methods"] = tuple(d["methods"])
        return SessionRecord(**d)
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(f"malformed session record in store: {e}") from None


#: Seconds an ended record (tombstone) is kept after ``last_seen``, so its end reason stays visible.
TOMBSTONE_SECONDS = 600.0
#: No live session outlives ``created_at`` + this (``[sessions] max_lifetime`` is at most 30 days).
MAX_RECORD_AGE = 31 * 86400.0


def record_expiry(rec: SessionRecord) -> float:
    """The instant after which a store may forget ``rec`` (its own size bound, not a session rule).

    Ended records are kept :data:`TOMBSTONE_SECONDS` after ``last_seen``; live ones until
    ``created_at + MAX_RECORD_AGE``, after which no configuration lets them live.
    """
    if rec.ended is not None:
        return rec.last_seen + TOMBSTONE_SECONDS
    return rec.created_at + MAX_RECORD_AGE


#: ``ended`` reason of a session ended by ``create(..., replace=True)``
REPLACED = "replaced-by-newer-login"


class LimitReached(Exception):
    """``create`` with a ``limit`` refused: the account already has ``live`` live sessions."""

    def __init__(self, account: str, live: int) -> None:
        self.account = account
        self.live = live
        super().__init__(f"account {account!r} already has {live} live session(s)")


def pick_replaced(live: list[SessionRecord], limit: int) -> list[SessionRecord]:
    """The oldest records (by ``created_at``, then id) that must end so one more fits under ``limit``."""
    extra = len(live) - limit + 1
    if extra <= 0:
        return []
    return sorted(live, key=lambda r: (r.created_at, r.id))[:extra]


#: Operations every store offers (same names and arguments in the blocking and the asynchronous face).
OPERATIONS = ("create", "get", "get_many", "update", "touch", "delete", "list", "delete_where", "incr_failure",
              "failures", "reset_failures", "use_totp_step", "consume_once", "stash", "unstash", "take_slot",
              "release_slot", "purge", "ping")


@runtime_checkable
class IBlockingStore(Protocol):
    """The blocking face of a store (an *engine*): used by the command line tools, which own their
    thread, and by :class:`proxy.stores.asynchronous.ThreadedStore` inside its worker thread.
    Never call it on the reactor thread. All methods are atomic."""

    def create(self, rec: SessionRecord, *, limit: int = 0, replace: bool = False) -> list[str]:
        """Store a new record; raise StoreError if the id exists.

        With ``limit`` > 0, atomically with the insert: when the account already has ``limit``
        live (not ended) records, raise :class:`LimitReached`, or with ``replace`` mark the
        oldest ended (``replaced-by-newer-login``) so the new one fits. The ids so ended
        ([] without a limit). Ended records are left as tombstones."""

    def get(self, session_id: str) -> SessionRecord | None:
        """The record, or None if unknown or forgotten."""

    def get_many(self, session_ids: list[str]) -> dict[str, SessionRecord | None]:
        """Several records at once (one round trip where the backend allows)."""

    def update(self, session_id: str, **fields: Any) -> SessionRecord | None:
        """Atomically change mutable fields; the new record, or None if the id is gone."""

    def touch(self, session_id: str, *, proved_at: float, last_seen: float, client_ip: str,
              long_grace: float) -> SessionRecord | None:
        """Atomically record activity: ``proved_at`` and ``last_seen`` only move forward (max of
        old and new), ``client_ip`` is set, and when a long trusted session is active
        (``long_until > 0``) ``long_until`` becomes max(old, new proved_at + ``long_grace``).
        An ended record is returned unchanged; None if the id is gone."""

    def delete(self, session_id: str) -> bool:
        """Remove a record; True if it existed."""

    def list(self) -> list[SessionRecord]:
        """Every stored record (including ended tombstones), in no particular order."""

    def delete_where(self, *, account: str | None = None, fingerprint: str | None = None) -> builtins.list[str]:
        """Remove every record matching all given criteria (at least one); the removed ids."""

    def incr_failure(self, key: str, now: float, window: float) -> int:
        """Record a failure for ``key`` at ``now``; the number of failures in ``(now - window, now]``.

        Failures of ``key`` at or before ``now - window`` are forgotten (bounded size), so use
        one window per key."""

    def failures(self, key: str, now: float, window: float) -> int:
        """The number of failures recorded for ``key`` in ``(now - window, now]``."""

    def reset_failures(self, key: str) -> None:
        """Forget every failure of ``key``."""

    def use_totp_step(self, account: str, step: int) -> bool:
        """Compare-and-set: True (and remember ``step``) only if ``step`` > the last used step."""

    def consume_once(self, namespace: str, item_id: str, expires_at: float) -> bool:
        """True the first time ``(namespace, item_id)`` is seen; False on any later call.

        The id is remembered at least until ``expires_at``.
        """

    def stash(self, namespace: str, item_id: str, value: str, expires_at: float) -> None:
        """Keep ``value`` under ``(namespace, item_id)`` until ``unstash`` or ``expires_at``
        (pending login state any worker of any gateway may continue)."""

    def unstash(self, namespace: str, item_id: str, now: float) -> str | None:
        """Atomically take (read and delete) a stashed value; None when absent or expired at ``now``."""

    def take_slot(self, namespace: str, item_id: str, now: float, expires_at: float, cap: int) -> int:
        """Atomically: forget slots of ``namespace`` expired at ``now``; when fewer than ``cap`` remain,
        add ``item_id`` (until ``expires_at``) and return how many there were before; else -1."""

    def release_slot(self, namespace: str, item_id: str) -> None:
        """Give a slot back (a slot never released expires by itself)."""

    def purge(self, now: float) -> int:
        """Forget records past :func:`record_expiry`, single-use ids past their ``expires_at`` and
        failures older than 31 days; the number of sessions forgotten. (Redis expires keys itself.)"""

    def ping(self) -> None:
        """Raise StoreError when the backend cannot be used right now."""

    def close(self) -> None:
        """Release connections/files; the store must not be used afterwards."""


class StoreHealth(Protocol):
    """Health and metrics of a store's operations (:class:`proxy.stores.asynchronous.StoreMonitor`)."""

    def use_metrics(self, metrics: MetricsRegistry | None) -> None:
        """Count operations, their latency and errors in ``metrics`` (once; None: nothing)."""

    def problem(self) -> str | None:
        """Why the store is degraded (its last operation failed), or None."""


@runtime_checkable
class ISessionStore(Protocol):
    """The store as the gateway uses it: every operation of :class:`IBlockingStore`, with the same
    arguments, returning a Deferred that fires with that operation's result, or fails with its
    exception. A backend that is unreachable or slower than the store's deadline fails the
    Deferred with :class:`StoreError` *within the deadline*; the caller never waits longer.
    Implementations: :class:`proxy.stores.memory.MemoryStore` (immediate),
    :class:`proxy.stores.sqlite.SQLiteStore` (a dedicated thread),
    :class:`proxy.stores.redis.RedisStore` (txredisapi on the reactor)."""

    kind: str

    @property
    def monitor(self) -> StoreHealth:
        """Health and metrics of the store's operations."""

    def create(self, rec: SessionRecord, *, limit: int = 0, replace: bool = False) -> "Deferred[list[str]]": ...

    def get(self, session_id: str) -> "Deferred[SessionRecord | None]": ...

    def get_many(self, session_ids: list[str]) -> "Deferred[dict[str, SessionRecord | None]]": ...

    def update(self, session_id: str, **fields: Any) -> "Deferred[SessionRecord | None]": ...

    def touch(self, session_id: str, *, proved_at: float, last_seen: float, client_ip: str,
              long_grace: float) -> "Deferred[SessionRecord | None]": ...

    def delete(self, session_id: str) -> "Deferred[bool]": ...

    def list(self) -> "Deferred[list[SessionRecord]]": ...

    def delete_where(self, *, account: str | None = None,
                     fingerprint: str | None = None) -> "Deferred[builtins.list[str]]": ...

    def incr_failure(self, key: str, now: float, window: float) -> "Deferred[int]": ...

    def failures(self, key: str, now: float, window: float) -> "Deferred[int]": ...

    def reset_failures(self, key: str) -> "Deferred[None]": ...

    def use_totp_step(self, account: str, step: int) -> "Deferred[bool]": ...

    def consume_once(self, namespace: str, item_id: str, expires_at: float) -> "Deferred[bool]": ...

    def stash(self, namespace: str, item_id: str, value: str, expires_at: float) -> "Deferred[None]": ...

    def unstash(self, namespace: str, item_id: str, now: float) -> "Deferred[str | None]": ...

    def take_slot(self, namespace: str, item_id: str, now: float, expires_at: float, cap: int) -> "Deferred[int]": ...

    def release_slot(self, namespace: str, item_id: str) -> "Deferred[None]": ...

    def purge(self, now: float) -> "Deferred[int]": ...

    def ping(self) -> "Deferred[None]": ...

    def close(self) -> "Deferred[None]": ...
