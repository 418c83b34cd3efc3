"""JSON-lines audit log of every authentication decision.

One line per decision: ``{"ts": ..., "event": ..., "decision": ..., ...}``. Callers pass
who (account, fingerprint, client IP), the decision and a stable reason code. Secrets
(passwords, TOTP codes, receipts, cookies) must never be passed; :meth:`Audit.record`
drops fields whose names look secret as a last line of defence.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, Any, Callable

from trust.escape import safe_json, safe_text

_SECRET_WORDS = ("password", "passwd", "totp_code", "code", "secret", "token", "cookie", "receipt", "assertion")


class Audit:
    """Append audit records to a stream. ``now`` returns epoch seconds (inject a clock)."""

    def __init__(self, stream: IO[str] | None = None, now: Callable[[], float] | None = None) -> None:
        import time

        self._stream = stream if stream is not None else sys.stderr
        self._now = now or time.time
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] | None = None  # set to [] to keep records in memory (tests)

    @classmethod
    def open(cls, target: str, now: Callable[[], float] | None = None) -> "Audit":
        """``-`` for standard error, else a file opened for appending (line buffered)."""
        if target == "-":
            return cls(sys.stderr, now)
        return cls(open(target, "a", buffering=1, encoding="utf-8"), now)

    def record(self, event: str, decision: str, reason: str, **fields: Any) -> dict[str, Any]:
        """Write one record; returns it. Fields named like secrets are dropped."""
        rec: dict[str, Any] = {"ts": round(self._now(), 3), "event": event, "decision": decision,
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
