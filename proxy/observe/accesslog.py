"""One JSON line per answered request (the access log), and the request metrics.

:class:`RequestLog` is the HTTP layer's ``request_done`` hook. Per request it observes the
request-duration histogram (by route and status class) and the upstream response time, and
appends one line to ``[log] access_file``::

  {"time":"2026-12-01T21:00:00.123Z","client":"192.0.2.7","account":"alice",
   "fingerprint":"ab12…","method":"GET","path":"/system","status":200,"bytes_in":0,
   "bytes_out":5120,"route":"default","upstream_status":200,"duration":0.0042,
   "upstream_wait":0.0003,"upstream_response":0.0031,"session":"9f2c…"}

``path`` is the canonical path the gate decided on (:mod:`proxy.paths`), without the query
string (which may carry secrets); a request refused for its target logs the target as
received (JSON-escaped). ``session`` is the first 16 hex digits of SHA-256 of the session id, never the id.
``bytes_in``/``bytes_out`` count body bytes. Lines are buffered and flushed every second
(and at shutdown); the time string is rebuilt once a second.
"""

from __future__ import annotations

import hashlib
import time
from json.encoder import encode_basestring_ascii as _encode
from typing import TYPE_CHECKING, Any, Callable

from trust.escape import safe_text

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.interfaces import IReactorTime

    from proxy.clock import Clock
    from proxy.observe.seams import MetricsRegistry

_CLASS = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")


def request_path(head: Any) -> str:
    """The path logged for ``head``: its target (the canonical one, what the gate decided on)
    without the query."""
    target = head.target
    q = target.find(b"?")
    return (target if q < 0 else target[:q]).decode("latin-1")


class RequestLog:
    """The ``request_done(connection, exchange)`` hook: metrics always, a log line when ``stream`` is set."""

    def __init__(self, *, metrics: MetricsRegistry, clock: Clock, stream: Any = None) -> None:
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
        fwd = r.fwd
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
        if fwd is not None:
            account, sid, t_up = fwd.account, fwd.session_id, r.t_up
        else:
            account, sid, t_up = None, None, 0.0
        account = account or getattr(ident, "account", None)
        cl = facts.content_length if facts is not None else None
        # Hand-built (about 3x cheaper than json.dumps of a dict); every string goes through
        # the JSON string encoder, so anything a client sent is escaped.
        line = "".join((
            '{"time":"', self._time(now),
            '","client":', _s(getattr(ident, "client_ip", None)),
            ',"account":', _s(account),
            ',"fingerprint":', _s(getattr(ident, "fingerprint", None)),
            ',"method":', _s(head.method.decode("latin-1")) if head is not None else "null",
            ',"path":', _s(request_path(head)) if head is not None else "null",
            ',"status":', str(status),
            ',"bytes_in":', str(cl if cl is not None else r.received),
            ',"bytes_out":', str(r.out_bytes),
            ',"route":', _s(route),
            ',"upstream_status":', str(status) if up_resp is not None else "null",
            ',"duration":', _n(now - t0),
            ',"upstream_wait":', _n(t_up - t0) if t_up else "null",
            ',"upstream_response":', _n(up_resp) if up_resp is not None else "null",
            ',"session":', _s(self._session(sid)),
            "}\n"))
        try:
            self.stream.write(line)
        except (OSError, ValueError):
            pass


def _s(value: str | None) -> str:
    """A JSON string (ASCII, escaped) or null; its decoded value is :func:`trust.escape.safe_text`."""
    return "null" if value is None else _encode(safe_text(value))


def _n(seconds: float) -> str:
    """Seconds with microsecond resolution as a JSON number."""
    return "%.6f" % seconds


def make_flusher(clock: IReactorTime, flush: Callable[[], None], interval: float = 1.0) -> Any:
    """A started LoopingCall flushing buffered log files every ``interval`` seconds."""
    from twisted.internet.task import LoopingCall

    loop = LoopingCall(flush)
    loop.clock = clock
    loop.start(interval, now=False)
    return loop
