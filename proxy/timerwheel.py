"""One coarse timer for many deadlines: :class:`TimerWheel`.

Every client connection has a deadline (handshake, header, idle, body, upstream answer) that
is seconds long and usually moves on before it passes. A ``callLater`` per connection costs a
``DelayedCall`` object and a place in the reactor's heap each; here the deadlines of all
connections share buckets of ``tick`` seconds and *one* reactor timer, armed for the earliest
bucket that holds an entry (none when the wheel is empty, so an idle process does not wake).

Guarantees:

* an entry added for time ``t`` is expired (``entry.expire(now)``) once, at a ``now >= t``
  and at most one ``tick`` later than ``t`` as far as the reactor's own lateness allows; never
  earlier than ``t``;
* :meth:`TimerWheel.discard` before that means it is never expired;
* entries of one bucket are expired in the order they were added; an entry added while a
  bucket is being expired (for a time already due) goes to the next tick, so expiring
  never loops;
* nothing is expired after :meth:`TimerWheel.stop`.

It does not check what an entry does when it expires, and keeps no per-entry state besides
the entry in its bucket: the entry remembers its bucket (the key :meth:`add` returned) if it
wants to move or discard itself. The clock is injected (:class:`proxy.clock.Clock`: a
reactor or ``twisted.internet.task.Clock``); this module imports no Twisted.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock, DelayedCall

#: the default bucket width: deadlines here are seconds long; 1/16 s is exact in binary floats
TICK = 0.0625


class WheelEntry(Protocol):
    """Something with a deadline: told once when its bucket's time has come."""

    def expire(self, now: float) -> None: ...


class TimerWheel:
    """Deadlines in buckets of ``tick`` seconds, one reactor timer for all; see the module docstring."""

    __slots__ = ("_clock", "_tick", "_buckets", "_due", "_call", "_call_key", "_done", "_firing", "_stopped")

    def __init__(self, clock: "Clock", tick: float = TICK) -> None:
        if not tick > 0:
            raise ValueError("tick must be positive")
        self._clock = clock
        self._tick = tick
        self._buckets: dict[int, dict[WheelEntry, None]] = {}  # key -> entries (insertion-ordered)
        self._due: list[int] = []  # heap of bucket keys
        self._call: DelayedCall | None = None
        self._call_key = 0
        self._done = -1  # the last key expired (entries are never added at or below it)
        self._firing = False
        self._stopped = False

    @property
    def tick(self) -> float:
        return self._tick

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def key_for(self, when: float) -> int:
        """The bucket of time ``when``: the first tick boundary at or after it."""
        return max(math.ceil(when / self._tick), self._done + 1)

    def add(self, entry: WheelEntry, when: float) -> int:
        """Expire ``entry`` at ``when`` (rounded up to the tick); returns its bucket key."""
        key = self.key_for(when)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            heapq.heappush(self._due, key)
            if not self._firing and (self._call is None or key < self._call_key):
                self._arm(key)
        bucket[entry] = None
        return key

    def discard(self, entry: WheelEntry, key: int) -> None:
        """``entry`` (added with bucket ``key``) is not expired; nothing if it is not there."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.pop(entry, None)
            if not bucket and not self._firing:
                del self._buckets[key]  # its heap key stays until its time (one empty wake-up at most)

    def move(self, entry: WheelEntry, key: int, when: float) -> int:
        """:meth:`discard` then :meth:`add`; returns the new bucket key."""
        self.discard(entry, key)
        return self.add(entry, when)

    def stop(self) -> None:
        """Forget every entry and the reactor timer; nothing is expired afterwards."""
        self._stopped = True
        self._buckets.clear()
        self._due.clear()
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    # ------------------------------------------------------------------ the one timer
    def _arm(self, key: int) -> None:
        if self._stopped:
            return
        call = self._call
        if call is not None and call.active():
            call.cancel()
        delay = max(0.0, key * self._tick - self._clock.seconds())
        self._call_key = key
        self._call = self._clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        limit = math.floor(now / self._tick)  # the buckets whose time has come
        # entries added while expiring go after ``limit``: one firing never loops
        self._done = max(self._done, limit)
        due, buckets = self._due, self._buckets
        self._firing = True
        try:
            while due and due[0] <= limit and not self._stopped:
                bucket = buckets.pop(heapq.heappop(due), None)
                if bucket:
                    for entry in bucket:
                        entry.expire(now)
        finally:
            self._firing = False
        while due and due[0] not in buckets:
            heapq.heappop(due)  # keys of buckets emptied by discard()
        if due:
            self._arm(due[0])
