"""One JSON line per answered request (the access log), and the request metrics.

:class:`RequestLog` is the HTTP layer's ``request_done`` hook. Per request it observes the
request-duration histogram (by route and status class) and the upstream response time, and
appends one line to ``[log] access_file``::

  {"time":"2026-12-01T21:00:00.123Z","client":"192.0.2.7","account":"alice",
   "fingerprint":"ab12…","method":"GET","path":"/system","status":200,"bytes_in":0,
   "bytes_out":5120,"route":"default","upstream_status":200,"duration":0.0042,
   "upstream_wait":0.0003,"upstream_response":0.0031,"session":"9f2c…"}

``path`` is the path the gate decided on, without the query string (which may carry
secrets). ``session`` is the first 16 hex digits of SHA-256 of the session id, never the id.
``bytes_in``/``bytes_out`` count body bytes. Lines are buffered and flushed every second
(and at shutdown); the time string is rebuilt once a second.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable

_CLASS = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")


def rfc3339(ts: float) -> str:
    """``ts`` (epoch seconds) as RFC 3339 UTC with milliseconds, e.g. ``2026-12-01T21:00:00.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%03dZ" % int((ts % 1) * 1000)


def request_path(head: Any) -> str:
    """The path logged for ``head``: its target without the query.

    Hook: when a canonical-path module decides routing on a normalised path, return that
    same value here so the log shows what was decided on.
    """
    target = head.target
    q = target.find(b"?")
    return (target if q < 0 else target[:q]).decode("latin-1")


class RequestLog:
    """The ``request_done(protocol, request)`` hook: metrics always, a log line when ``stream`` is set."""

    def __init__(self, *, metrics: Any, clock: Any, stream: Any = None) -> None:
        self.clock = clock
        self.stream = stream
        self._hist = metrics.histogram("http_request_duration_seconds",
                                       "Request head received to response complete (WebSocket: to 101)",
                                       ("route", "code_class"))
        self._up = metrics.histogram("upstream_response_duration_seconds",
                                     "Request sent upstream to its response head", ("route",))
        self._sec = -1
        self._prefix = ""
        self._sid: tuple[str, str] = ("", "")

    def _time(self, now: float) -> str:
        sec = int(now)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return self._prefix + ".%03dZ" % int((now - sec) * 1000)

    def _session(self, sid: str | None) -> str | None:
        if not sid:
            return None
        if self._sid[0] != sid:
            self._sid = (sid, hashlib.sha256(sid.encode("utf-8")).hexdigest()[:16])
        return self._sid[1]

    def __call__(self, proto: Any, r: Any) -> None:
        now = self.clock.seconds()
        t0 = r.t0 or now
        fwd = proto._fwd
        route = fwd.route.name if fwd is not None else "local"
        status = r.status
        self._hist.labels(route, _CLASS[status // 100] if 0 < status < 600 else "other").observe(now - t0)
        up_resp = r.t_head - r.t_up if fwd is not None and r.t_head and r.t_up else None
        if up_resp is not None:
            self._up.labels(route).observe(up_resp)
        if self.stream is None:
            return
        ident = proto.identity
        head = r.head
        facts = r.facts
        rec = {
            "time": self._time(now),
            "client": getattr(ident, "client_ip", None),
            "account": (fwd.account if fwd is not None and fwd.account else getattr(ident, "account", None)),
            "fingerprint": getattr(ident, "fingerprint", None),
            "method": head.method.decode("latin-1") if head is not None else None,
            "path": request_path(head) if head is not None else None,
            "status": status,
            "bytes_in": (facts.content_length if facts is not None and facts.content_length is not None
                         else r.received),
            "bytes_out": r.out_bytes,
            "route": route,
            "upstream_status": status if up_resp is not None else None,
            "duration": round(now - t0, 6),
            "upstream_wait": round(r.t_up - t0, 6) if fwd is not None and r.t_up else None,
            "upstream_response": round(up_resp, 6) if up_resp is not None else None,
            "session": self._session(fwd.session_id if fwd is not None else None),
        }
        try:
            self.stream.write(json.dumps(rec, separators=(",", ":")) + "\n")
        except (OSError, ValueError):
            pass


def make_flusher(clock: Any, flush: Callable[[], None], interval: float = 1.0) -> Any:
    """A started LoopingCall flushing buffered log files every ``interval`` seconds."""
    from twisted.internet.task import LoopingCall

    loop = LoopingCall(flush)
    loop.clock = clock
    loop.start(interval, now=False)
    return loop
