"""The local-answer part of a client connection (:class:`LocalAnswers`): ``Response`` and ``Local`` decisions.

A ``Response`` is written at once; the request body (if any) is read and discarded, at most
``max_body_unauthenticated`` bytes, and never forwarded. A ``Local`` decision reads the body
(at most ``Local.max_body``, and ``[limits] max_body`` when set; more is 413) and calls the
handler, which may answer with a value or a Deferred.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from proxy.http.exchange import ANSWER, B_COLLECT, B_DISCARD, COLLECT, HANDLE_LATER, Exchange
from proxy.http.flow import K_BODY, P_BUFFER, P_DECIDE
from proxy.http.messages import Local, Response
from proxy.http.wire import CONTINUE_100, render_response

if TYPE_CHECKING:  # pragma: no cover
    from proxy.http.parts import Host

log = Logger()


class LocalAnswers:
    """A :class:`proxy.http.parts.LocalAnswering` for one client connection (it keeps no state)."""

    __slots__ = ("_host",)

    def __init__(self, host: "Host") -> None:
        self._host = host

    def respond(self, ex: Exchange, resp: Response) -> None:
        """Answer ``ex`` with ``resp``; the request body is read and discarded (bounded), never forwarded."""
        host = self._host
        facts, head = ex.facts, ex.head
        assert facts is not None and head is not None
        close = resp.close or not facts.keep_alive or host.closing or host.age_exceeded()
        if not ex.complete:
            limit = host.factory.max_body_unauth
            if facts.expect_continue or (facts.content_length or 0) > limit:
                close = True  # we do not invite (or accept) that body
            else:
                ex.limit = limit
                ex.received = ex.buffered
                ex.switch_body(B_DISCARD)
        host.drop_buffered(ex)
        ex.status = resp.status
        ex.out_bytes = len(resp.body)
        host.write(render_response(resp, head_only=head.method == b"HEAD", close=close,
                                   keep_alive_10=head.version == b"1.0"))
        ex.advance(ANSWER)
        host.finish(close)

    def start(self, ex: Exchange, local: Local) -> None:
        """Collect the body of ``ex`` (bounded), then :meth:`run` the handler."""
        host = self._host
        facts = ex.facts
        assert facts is not None
        max_body = host.factory.max_body
        limit = local.max_body if not max_body else min(local.max_body, max_body)
        if (facts.content_length or 0) > limit:
            host.error_now(413)
            return
        ex.limit = limit
        ex.local = local
        if ex.complete:
            self.run(ex)
            return
        if ex.buffered > limit:
            host.error_now(413)
            return
        if facts.expect_continue:
            host.write(CONTINUE_100)
        ex.received = ex.buffered
        ex.advance(COLLECT)
        ex.switch_body(B_COLLECT)
        host.flow.arm(K_BODY, host.factory.idle_timeout)
        host.flow.resume(P_BUFFER)

    def run(self, ex: Exchange) -> None:
        """The body of ``ex`` is complete: call the handler of its ``Local`` decision."""
        host = self._host
        local = ex.local
        conn = host.conn
        assert local is not None and ex.head is not None and conn is not None
        body = b"".join(ex.chunks)
        host.drop_buffered(ex)
        try:
            res = local.handler(ex.head, body, conn)
        except Exception:
            log.failure("local handler failed")
            host.error_now(500)
            return
        if isinstance(res, Deferred):
            host.wait_for(ex, res, HANDLE_LATER, self._done)
        else:
            self._done(res, ex)

    def _done(self, resp: Any, ex: Exchange) -> None:
        host = self._host
        if host.gone or host.active is not ex:
            return
        host.flow.resume(P_DECIDE)
        host.flow.disarm()
        if not isinstance(resp, Response):
            log.error("local handler returned {resp!r}, not a Response", resp=resp)
            host.error_now(500)
            return
        self.respond(ex, resp)
