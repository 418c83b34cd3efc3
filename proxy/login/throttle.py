"""Login abuse controls: failure throttling (per account, certificate, IP) and MaxStartups.

Failure throttling keeps its counters in the session store (``incr_failure``, ``failures``,
``reset_failures``), so they survive a restart and are shared between gateways on Redis.
Keys are ``account:NAME``, ``cert:FINGERPRINT`` and ``ip:ADDRESS``. When one key reaches
``failure_limit`` failures within ``failure_window`` seconds, a lock entry ``lock:KEY`` is
recorded and every login touching that key is refused for ``lockout`` seconds (the failure
count of the key then starts again from zero). The refusal is the same whether the account
exists or not.

:class:`Startups` caps concurrent pending logins like cockpit-ws's ``MaxStartups``
(``start:rate:full``, taken from sshd): below ``start`` every login starts; from ``start``
on, a new one is refused with probability ``rate``% rising linearly to 100% at ``full``.
The random source is injected (``rng.random()`` in [0, 1)).
"""

from __future__ import annotations

import contextlib
import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generator, Iterator, Protocol, Sequence

from twisted.internet.defer import Deferred, inlineCallbacks

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock
    from proxy.interfaces import SessionStore


class FailureStore(Protocol):
    """The failure-counter operations of an asynchronous store (each returns a Deferred)."""

    def incr_failure(self, key: str, now: float, window: float) -> Any: ...

    def failures(self, key: str, now: float, window: float) -> Any: ...

    def reset_failures(self, key: str) -> Any: ...


def keys_for(account: str | None, fingerprint: str | None, client_ip: str | None) -> list[str]:
    """The counter keys a login attempt touches (only the parts that are known)."""
    out = []
    if account:
        out.append("account:" + account)
    if fingerprint:
        out.append("cert:" + fingerprint)
    if client_ip:
        out.append("ip:" + client_ip)
    return out


@dataclass(frozen=True)
class ThrottleState:
    blocked: bool
    key: str | None = None  # the locked key (for the audit log only, never shown)
    retry_after: int = 0


class Throttle:
    """Failure counting and lockout on a store. ``limit``/``window``/``lockout`` from ``[login]``."""

    def __init__(self, store: FailureStore, *, limit: int, window: float, lockout: float) -> None:
        self._store = store
        self.limit = limit
        self.window = window
        self.lockout = lockout

    @inlineCallbacks
    def check(self, keys: Sequence[str], now: float) -> Generator[Deferred[Any], Any, ThrottleState]:
        """Blocked when any key is locked; ``retry_after`` is the lockout (an upper bound).
        A Deferred (ThrottleState); fails with StoreError when the store cannot answer."""
        for k in keys:
            if (yield self._store.failures("lock:" + k, now, self.lockout)) > 0:
                return ThrottleState(True, k, max(1, int(self.lockout)))
        return ThrottleState(False)

    @inlineCallbacks
    def fail(self, keys: Sequence[str], now: float) -> Generator[Deferred[Any], Any, ThrottleState]:
        """Count one failure on every key; lock those that reached the limit. A Deferred (ThrottleState)."""
        locked: str | None = None
        for k in keys:
            if (yield self._store.incr_failure(k, now, self.window)) >= self.limit:
                yield self._store.incr_failure("lock:" + k, now, self.lockout)
                yield self._store.reset_failures(k)
                locked = locked or k
        if locked:
            return ThrottleState(True, locked, max(1, int(self.lockout)))
        return ThrottleState(False)

    @inlineCallbacks
    def succeed(self, keys: Sequence[str]) -> Generator[Deferred[Any], Any, None]:
        """Forget the failures of ``keys`` (callers pass account and certificate, not the IP). A Deferred."""
        for k in keys:
            yield self._store.reset_failures(k)


class StartupRefused(Exception):
    """Too many logins are pending (MaxStartups); ``pending`` is how many were."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        super().__init__(f"too many pending logins ({pending})")


def startup_spec(value: Any) -> tuple[int, int, int]:
    """``(start, rate, full)`` from a parsed tuple, an int ``N`` or the text ``N`` / ``start:rate:full``.

    ``N`` means ``N:100:N`` (refuse every login beyond N). ValueError says what is wrong.
    """
    if isinstance(value, int):
        value = (value, 100, value)
    elif isinstance(value, str):
        try:
            nums = [int(x) for x in value.split(":")]
        except ValueError:
            raise ValueError(f"max_startups {value!r} is not N or start:rate:full") from None
        value = (nums[0], 100, nums[0]) if len(nums) == 1 else tuple(nums)
    t = tuple(value)
    if len(t) != 3 or not (1 <= t[0] <= t[2] and 0 <= t[1] <= 100):
        raise ValueError(f"max_startups {value!r} is not start:rate:full with 1 <= start <= full, rate 0..100")
    return (int(t[0]), int(t[1]), int(t[2]))


class Startups:
    """Counts pending logins; :meth:`slot` admits or refuses one (thread-safe)."""

    def __init__(self, spec: Any, rng: Any = None) -> None:
        self.start, self.rate, self.full = startup_spec(spec)
        self._rng = rng if rng is not None else random.SystemRandom()
        self._lock = threading.Lock()
        self.pending = 0

    def refuse_probability(self, pending: int) -> float:
        """The probability (0..1) that a new login is refused while ``pending`` are in progress."""
        if pending < self.start:
            return 0.0
        if pending >= self.full:
            return 1.0
        span = self.full - self.start
        return (self.rate + (100 - self.rate) * (pending - self.start) / span) / 100.0

    def try_acquire(self) -> bool:
        """Take a slot if admitted; the caller must :meth:`release` it."""
        with self._lock:
            p = self.refuse_probability(self.pending)
            if p >= 1.0 or (p > 0.0 and self._rng.random() < p):
                return False
            self.pending += 1
            return True

    def release(self) -> None:
        with self._lock:
            if self.pending > 0:
                self.pending -= 1

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """A pending-login slot for the ``with`` body; raises StartupRefused when refused."""
        if not self.try_acquire():
            raise StartupRefused(self.pending)
        try:
            yield
        finally:
            self.release()


class SharedStartups:
    """MaxStartups across every worker and gateway sharing the session store.

    Each pending login holds a slot in the store (``take_slot``: atomic, capped at ``full``);
    the refusal probability between ``start`` and ``full`` uses the number of slots taken
    before this one, as :class:`Startups` does. A slot lives at most ``lifetime`` seconds
    (``[login] timeout``), so a crashed process cannot hold slots for ever. ``pending`` counts
    the slots this process holds (for tests and logs only).
    """

    NAMESPACE = "login-startups"

    def __init__(self, store: SessionStore, spec: Any, clock: Clock, lifetime: float, rng: Any = None) -> None:
        self._rule = Startups(spec, rng)
        self.start, self.rate, self.full = self._rule.start, self._rule.rate, self._rule.full
        self._store = store
        self._clock = clock
        self.lifetime = float(lifetime)
        self.pending = 0

    def refuse_probability(self, pending: int) -> float:
        return self._rule.refuse_probability(pending)

    def try_acquire(self) -> Any:
        """A Deferred: a slot id to :meth:`release`, or None when refused (StoreError when the store fails)."""
        import secrets

        slot = secrets.token_hex(12)
        now = self._clock.seconds()

        def decided(before: int) -> Any:
            if before < 0:
                return None
            p = self.refuse_probability(before)
            if p >= 1.0 or (p > 0.0 and self._rule._rng.random() < p):
                return self._store.release_slot(self.NAMESPACE, slot).addCallback(lambda _: None)
            self.pending += 1
            return slot
        return self._store.take_slot(self.NAMESPACE, slot, now, now + self.lifetime, self.full).addCallback(decided)

    def release(self, slot: str) -> Any:
        """Give ``slot`` back; a Deferred that never fails (a slot not released expires)."""
        self.pending = max(0, self.pending - 1)
        return self._store.release_slot(self.NAMESPACE, slot).addErrback(lambda f: None)
