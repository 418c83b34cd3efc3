"""Local answers of :class:`proxy.http.connection.GatewayProtocol`: ``Response`` and ``Local`` decisions.

A ``Response`` is written at once; the request body (if any) is read and discarded, at most
``max_body_unauthenticated`` bytes, and never forwarded. A ``Local`` decision reads the body
(at most ``Local.max_body``, and ``[limits] max_body`` when set; more is 413) and calls the
handler, which may answer with a value or a Deferred.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from proxy.http.flow import K_BODY as _K_BODY, K_UPSTREAM as _K_UPSTREAM
from proxy.http.flow import P_BUFFER as _P_BUFFER, P_DECIDE as _P_DECIDE
from proxy.http.wire import CONTINUE_100, render_response
from proxy.http.messages import Local, Response

log = Logger()



class LocalMixin:
    """Methods mixed into GatewayProtocol; they use its attributes (see proxy.http.connection)."""

    __slots__ = ()

    def _respond(self, r: Any, resp: Response) -> None:
        """Answer locally; the request body is read and discarded (bounded), never forwarded."""
        facts = r.facts
        close = resp.close or not facts.keep_alive or self._closing or self._age_exceeded()
        if not r.complete:
            limit = self.factory.max_body_unauth
            if facts.expect_continue or (facts.content_length or 0) > limit:
                close = True  # we do not invite (or accept) that body
            else:
                r.limit = limit
                r.received = r.buffered
                r.sink = self._discard_sink
        self._drop_buffered(r)
        r.status = resp.status
        r.out_bytes = len(resp.body)
        self.transport.write(render_response(resp, head_only=r.head.method == b"HEAD",  # type: ignore[union-attr]
                                             close=close, keep_alive_10=r.head.version == b"1.0"))  # type: ignore[union-attr]
        self._finish(close)

    def _discard_sink(self, data: bytes) -> None:
        r = self._incoming
        if r is None:
            return
        r.received += len(data)
        if r.limit is not None and r.received > r.limit:
            r.sink = None
            self._close()

    def _local(self, r: Any, local: Local) -> None:
        limit = local.max_body if not self.factory.max_body else min(local.max_body, self.factory.max_body)
        if (r.facts.content_length or 0) > limit:
            self._error_now(413)
            return
        r.limit = limit

        def run() -> None:
            body = b"".join(r.chunks)
            self._drop_buffered(r)
            try:
                res = local.handler(r.head, body, self.conn)  # type: ignore[arg-type]
            except Exception:
                log.failure("local handler failed")
                self._error_now(500)
                return
            if isinstance(res, Deferred):
                self._pause(_P_DECIDE)
                self._arm(_K_UPSTREAM, self.factory.config.default_route.read_timeout)
                res.addCallbacks(self._local_done, self._decide_failed, callbackArgs=(r,), errbackArgs=(r,))
            else:
                self._local_done(res, r)

        if r.complete:
            run()
            return
        if r.buffered > limit:
            self._error_now(413)
            return
        if r.facts.expect_continue:
            self.transport.write(CONTINUE_100)
        r.received = r.buffered
        r.sink = self._collect_sink
        r.on_complete = run
        self._arm(_K_BODY, self.factory.idle_timeout)
        self._resume(_P_BUFFER)

    def _collect_sink(self, data: bytes) -> None:
        r = self._incoming
        if r is None:
            return
        r.chunks.append(data)
        r.received += len(data)
        if r.limit is not None and r.received > r.limit:
            r.sink = None
            r.on_complete = None
            self._error_now(413)

    def _local_done(self, resp: Any, r: Any) -> None:
        if self.gone or self._active is not r:
            return
        self._resume(_P_DECIDE)
        self._dl_kind = 0  # K_NONE
        if not isinstance(resp, Response):
            log.error("local handler returned {resp!r}, not a Response", resp=resp)
            self._error_now(500)
            return
        self._respond(r, resp)

