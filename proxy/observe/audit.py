"""JSON-lines audit log of every authentication decision.

One line per decision: ``{"time": "2026-12-01T21:00:00.123Z", "event": ..., "decision": ..., ...}``. Callers pass
who (account, fingerprint, client IP), the decision and a stable reason code. Secrets
(passwords, TOTP codes, receipts, cookies) must never be passed; :meth:`Audit.record`
drops fields whose names look secret as a last line of defence.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, IO

from proxy.clock import rfc3339
from trust.escape import safe_json, safe_text

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock

_SECRET_WORDS = ("password", "passwd", "totp_code", "code", "secret", "token", "cookie", "receipt", "assertion")


class Audit:
    """Append audit records to a stream. ``now`` returns epoch seconds (inject a clock).

    ``time`` is RFC 3339 UTC with milliseconds."""

    def __init__(self, stream: IO[str] | None = None, now: Callable[[], float] | None = None) -> None:
        import time

        self._stream = stream if stream is not None else sys.stderr
        self._now = now or time.time
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] | None = None  # set to [] to keep records in memory (tests)

    @classmethod
    def open(cls, target: str, now: Callable[[], float] | None = None) -> "Audit":
        """``-`` for standard error, else a file opened for appending (line buffered)."""
        from proxy.observe.logfiles import open_log

        return cls(open_log(target), now)

    def record(self, event: str, decision: str, reason: str, **fields: Any) -> dict[str, Any]:
        """Write one record; returns it. Fields named like secrets are dropped."""

        rec: dict[str, Any] = {"time": rfc3339(self._now()), "event": event, "decision": decision,
                               "reason": reason}
        for k, v in fields.items():
            if any(w == k or k.endswith("_" + w) for w in _SECRET_WORDS):
                continue
            rec[k] = v
        line = json.dumps(safe_json(rec), separators=(",", ":"), default=safe_text)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass
        if self.records is not None:
            self.records.append(rec)
        return rec


def memory_audit(now: Callable[[], float] | None = None) -> Audit:
    """An Audit that keeps records in ``.records`` and writes nowhere (for tests)."""
    import io

    a = Audit(io.StringIO(), now)
    a.records = []
    return a


class RefusalDigest:
    """Refused TLS handshakes, summed per (source address, reason) and written once per ``interval``.

    A flood writes at most ``max_keys`` + 1 records per interval (further sources are summed
    under ``client_ip = "*"``), so it cannot fill the disk. ``flush()`` writes and resets.
    """

    def __init__(self, audit: Audit, clock: Clock, interval: float = 60.0, max_keys: int = 256) -> None:
        self.audit, self.clock, self.interval, self.max_keys = audit, clock, interval, max_keys
        self._counts: dict[tuple[str, str], list[float]] = {}  # -> [count, first, last]
        self._loop: Any = None

    def add(self, client_ip: str, reason: str) -> None:
        now = self.clock.seconds()
        key = (client_ip, reason)
        entry = self._counts.get(key)
        if entry is None:
            if len(self._counts) >= self.max_keys:
                key = ("*", reason)
                entry = self._counts.get(key)
            if entry is None:
                entry = self._counts[key] = [0, now, now]
        entry[0] += 1
        entry[2] = now

    def flush(self) -> None:

        counts, self._counts = self._counts, {}
        for (ip, reason), (n, first, last) in sorted(counts.items()):
            self.audit.record("tls-handshake", "deny", reason, client_ip=ip, count=int(n),
                              first=rfc3339(first), last=rfc3339(last))

    def start(self) -> None:
        from twisted.internet.task import LoopingCall

        self._loop = LoopingCall(self.flush)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.flush()
