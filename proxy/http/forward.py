"""The forwarding part of a client connection (:class:`Forwarder`): request out, response back, 101 splice.

The connection holds one :class:`Forwarder`; it is the upstream pool's ``Requester``
(:class:`proxy.http.upstream.Requester`) and works on the connection's active
:class:`~proxy.http.exchange.Exchange`. Guarantees:

- the request is forwarded under the decision's ``body`` rule (limit; streamed, or a chunked
  body collected first and sent with ``Content-Length``); the HTTP layer itself decides nothing
  by identity;
- the upstream request head is built in one bytes join after header hygiene
  (:mod:`proxy.http.headers`); framing is ``Content-Length`` as received, chunked re-encoded from
  the parser's body callbacks, or ``Content-Length`` for a collected body;
- the response is relayed with its framing tracked: ``Content-Length`` passed through, chunked
  re-encoded, read-until-close turned into chunked for HTTP/1.1 clients; at most one write to
  the client per upstream read (head and body of a small response go together); a body the
  decision's ``rewrite`` changes is sent chunked;
- a pooled connection is reused only after a cleanly finished exchange;
- a WebSocket tunnel starts only after ``101`` with the right ``Sec-WebSocket-Accept``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from proxy.http.exchange import (B_CHUNKED, B_COLLECT, B_IGNORE, B_STREAM, COLLECT, CONNECTING, DONE, DONE_STATE,
                                 FORWARD, HEAD_STATE, READY_STATE, RELAYING, RESPONSE_DONE, RETRY, UPGRADE, UPSTREAM,
                                 Exchange)
from proxy.http.flow import K_BODY, K_UPSTREAM, P_BUFFER, P_UPSTREAM
from proxy.http.headers import (HeaderValueError, certgate_headers, clean_request_headers, clean_response_headers,
                                render_headers)
from proxy.http.tunnel import WebSocketTunnel, ws_accept
from proxy.http.upstream import F_CLOSE, F_LENGTH, F_NONE, Headers, Pool, UpstreamConnection
from proxy.http.wire import CONTINUE_100, status_line

if TYPE_CHECKING:  # pragma: no cover
    from proxy.http.messages import Forward
    from proxy.http.parts import Host

log = Logger()

_WS_UPGRADE = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
_TE_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"


class Forwarder:
    """A :class:`proxy.http.parts.Forwarding` and the pool's requester, for one client connection.

    Per connection it keeps only what outlives a request: the upstream connection in use
    (``up``; a tunnel's too), its pool, the output buffer of one upstream read, and the rendered
    identity headers of the last request (reused while account and host stay the same).
    """

    __slots__ = ("_host", "up", "_pool", "_out", "_ours_key", "_ours")

    def __init__(self, host: "Host") -> None:
        self._host = host
        self.up: UpstreamConnection | None = None
        self._pool: Pool | None = None
        self._out: list[bytes] = []
        self._ours_key: tuple[str | None, bytes | None] | None = None
        self._ours = b""

    @property
    def gone(self) -> bool:
        """The client connection is gone (the pool skips gone requesters)."""
        return self._host.gone

    # ------------------------------------------------------------------ request out
    def start(self, ex: Exchange, fwd: "Forward") -> None:
        """Forward ``ex`` as ``fwd`` says (now, or once a collected body is complete)."""
        host = self._host
        f = host.factory
        facts = ex.facts
        assert facts is not None
        if facts.websocket and f.ws_origins and facts.origin not in f.ws_origins:
            host.error_now(403)
            return
        rule = fwd.body
        limit = rule.limit
        cl = facts.content_length
        if limit is not None and cl is not None and cl > limit:
            host.error_now(413)
            return
        ex.limit = limit
        ex.fwd = fwd
        if facts.chunked and not rule.stream:
            # A chunked body the rule does not stream: collect (bounded) before anything goes upstream.
            if ex.complete:
                ex.received = ex.buffered
                self.go(ex, True)
                return
            if limit is not None and ex.buffered > limit:
                host.error_now(413)
                return
            ex.received = ex.buffered
            ex.advance(COLLECT)
            ex.switch_body(B_COLLECT)
            if facts.expect_continue:
                host.write(CONTINUE_100)
            host.flow.arm(K_BODY, f.idle_timeout)
            host.flow.resume(P_BUFFER)
            return
        self.go(ex, False)

    def go(self, ex: Exchange, dechunk: bool) -> None:
        """Build the upstream head and ask the pool for a connection (``dechunk``: a collected body)."""
        host = self._host
        fwd = ex.fwd
        if fwd is None or host.gone or ex.state >= DONE:
            return
        f = host.factory
        head = ex.head
        facts = ex.facts
        assert head is not None and facts is not None
        route = fwd.route
        policy = f.header_policy
        sets = fwd.set_headers
        hs = clean_request_headers(head.headers, policy, [k for k, _ in sets] if sets else ())
        host_hdr = facts.host
        if not policy.preserve_host or host_hdr is None:
            hs = [(k, v) for k, v in hs if k.lower() != b"host"]
            default_port = 443 if route.scheme == "https" else 80
            up_host = route.host if route.port == default_port else f"{route.host}:{route.port}"
            hs.insert(0, (b"Host", up_host.encode("idna")))
        key = (fwd.account, host_hdr)
        if not sets and key == self._ours_key:
            ours = self._ours  # same identity headers as the previous request on this connection
        else:
            try:
                ours = render_headers(certgate_headers(policy, host.identity, fwd.account, host_hdr, sets))
            except HeaderValueError as e:
                log.error("refusing to forward: {why}", why=str(e))
                host.error_now(500)
                return
            if not sets:
                self._ours_key, self._ours = key, ours
        if dechunk:
            framing = b"Content-Length: %d\r\n" % ex.received if ex.received or head.method not in (b"GET", b"HEAD") \
                else b""
        elif facts.chunked:
            framing = _TE_CHUNKED
        elif facts.content_length is not None:
            framing = b"Content-Length: %d\r\n" % facts.content_length
        else:
            framing = b""
        if facts.websocket:
            framing += _WS_UPGRADE
        # The canonical target the gate decided on (proxy.paths); the raw one only when unsafe.
        target = ex.raw_target if route.unsafe_forward_raw_target else head.target
        if route.base_path and target != b"*":
            target = route.base_path.encode("latin-1") + target
        ex.up_head = b"".join((head.method, b" ", target, b" HTTP/1.1\r\n", render_headers(hs),
                               ours, framing, b"\r\n"))
        ex.dechunk = dechunk
        ex.advance(FORWARD)
        pool = self._pool = f.pools.pool_for(route)
        pool.acquire(self)
        if ex.state == CONNECTING and host.active is ex:
            # Connecting or waiting for a free connection (max_connections): bounded too.
            host.flow.arm(K_UPSTREAM, route.connect_timeout + route.read_timeout)

    def upstream_ready(self, conn: UpstreamConnection) -> None:
        host = self._host
        ex = host.active
        if ex is None or host.gone or ex.state != CONNECTING:
            conn.pool.release(conn, True)
            return
        ex.state = READY_STATE
        self.up = conn
        ex.t_up = host.clock.seconds()
        head, facts, fwd = ex.head, ex.facts, ex.fwd
        assert head is not None and facts is not None and fwd is not None
        conn.head_request = head.method == b"HEAD"
        if facts.websocket:
            conn.reusable = False
        flow = host.flow
        if flow.write_paused:
            conn.pause_reading()
        chunked = facts.chunked and not ex.dechunk
        chunks = ex.chunks
        if chunks:
            if chunked:
                out = [ex.up_head]
                for c in chunks:
                    out += (b"%x\r\n" % len(c), c, b"\r\n")
            else:
                out = [ex.up_head, *chunks]
            if ex.complete and chunked:
                out.append(_LAST_CHUNK)
            conn.write(b"".join(out))
            host.drop_buffered(ex)
        elif ex.complete and chunked:
            conn.write(ex.up_head + _LAST_CHUNK)
        else:
            conn.write(ex.up_head)
        if ex.complete:
            flow.arm(K_UPSTREAM, fwd.route.read_timeout)
        else:
            ex.switch_body(B_CHUNKED if chunked else B_STREAM)
            if facts.expect_continue:
                host.write(CONTINUE_100)
            flow.arm(K_BODY, host.factory.idle_timeout)
        flow.resume(P_BUFFER)

    def body(self, ex: Exchange, data: bytes) -> None:
        """Request-body bytes of ``ex`` as they arrive (``B_STREAM`` / ``B_CHUNKED``)."""
        up = self.up
        if up is None or (ex.state != UPSTREAM and ex.state != RELAYING):
            return
        if ex.body_mode == B_STREAM:
            up.write(data)
            return
        ex.received += len(data)
        if ex.limit is not None and ex.received > ex.limit:
            ex.switch_body(B_IGNORE)
            self._host.fail_active(413)
            return
        up.write_sequence((b"%x\r\n" % len(data), data, b"\r\n"))

    def body_sent(self, ex: Exchange) -> None:
        """The whole request body of ``ex`` went upstream: end the chunks; the read deadline runs."""
        up = self.up
        if up is None:
            return
        if ex.facts is not None and ex.facts.chunked and not ex.dechunk:
            up.write(_LAST_CHUNK)
        fwd = ex.fwd
        if ex.state == UPSTREAM and fwd is not None:
            self._host.flow.arm(K_UPSTREAM, fwd.route.read_timeout)

    def upstream_failed(self, status: int) -> None:
        host = self._host
        ex = host.active
        if host.gone or ex is None or ex.state != CONNECTING:
            return
        self._count_error()
        host.error_now(status)

    def upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self._host.flow.pause(P_UPSTREAM)
        else:
            self._host.flow.resume(P_UPSTREAM)

    def cancel(self) -> None:
        """Drop the upstream side of the active exchange (its connection, or its place in the queue)."""
        up, self.up = self.up, None
        if up is not None:
            up.abort()
        elif self._pool is not None:
            self._pool.cancel(self)

    def client_lost(self) -> None:
        """The client went away (not tunnelling): the upstream request is cancelled."""
        self.cancel()

    def pause_reading(self) -> None:
        if self.up is not None:
            self.up.pause_reading()

    def resume_reading(self) -> None:
        if self.up is not None:
            self.up.resume_reading()

    def _count_error(self) -> None:
        f = self._host.factory
        f.counters["upstream_errors"] += 1
        f.m_upstream_errors.inc()

    # ------------------------------------------------------------------ response back
    def response_head(self, status: int, headers: Headers, framing: int, length: int) -> None:
        host = self._host
        ex = host.active
        if ex is None or ex.state != UPSTREAM:
            return
        fwd, head, facts = ex.fwd, ex.head, ex.facts
        assert fwd is not None and head is not None and facts is not None
        ex.state = HEAD_STATE  # checked: UPSTREAM
        ex.status = status
        ex.t_head = host.clock.seconds()
        close = host.closing or not facts.keep_alive or not ex.complete or host.age_exceeded()
        hs = clean_response_headers(headers)
        if fwd.on_response is not None:
            extra = fwd.on_response(status, hs)
            if extra:
                hs = hs + list(extra)
        parts = [status_line(status), render_headers(hs)]
        client_framing = framing
        rewrite = fwd.rewrite
        if rewrite is not None and framing != F_NONE:
            rw = ex.rewriter = rewrite.start(status, hs)
            if rw is not None:
                client_framing = F_CLOSE  # the body changes length: sent chunked (or close-delimited)
        if client_framing == F_NONE:
            if length >= 0 and head.method == b"HEAD":
                parts.append(b"Content-Length: %d\r\n" % length)
        elif client_framing == F_LENGTH:
            parts.append(b"Content-Length: %d\r\n" % length)
        elif head.version == b"1.1":
            parts.append(_TE_CHUNKED)
            ex.rechunk = True
        else:
            close = True
        if close:
            parts.append(_CLOSE)
        elif head.version == b"1.0":
            parts.append(_KEEP_ALIVE)
        parts.append(b"\r\n")
        self._out.append(b"".join(parts))
        ex.resp_close = close
        ex.resp_framing = framing

    def response_body(self, data: bytes) -> None:
        ex = self._host.active
        if ex is None or ex.state != RELAYING:
            return
        ex.out_bytes += len(data)
        rw = ex.rewriter
        if rw is not None:
            data = rw.feed(data)
            if not data:
                return
        if ex.rechunk:
            self._out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self._out.append(data)

    def flush(self) -> None:
        out = self._out
        host = self._host
        if out:
            host.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if host.flow.kind == K_UPSTREAM:
            ex = host.active
            fwd = ex.fwd if ex is not None else None
            if fwd is not None:
                host.flow.arm(K_UPSTREAM, fwd.route.read_timeout)

    def _end_body(self, ex: Exchange) -> None:
        """The rest a rewriter held back, and the last chunk when re-chunking."""
        rw, ex.rewriter = ex.rewriter, None
        if rw is not None:
            tail = rw.finish()
            if tail:
                self.response_body(tail)
        if ex.rechunk:
            self._out.append(_LAST_CHUNK)

    def response_done(self) -> None:
        host = self._host
        ex = host.active
        up, self.up = self.up, None
        if ex is None or ex.state != RELAYING:
            if up is not None and self._pool is not None:
                self._pool.release(up, False)
            return
        self._end_body(ex)
        if up is not None and self._pool is not None:
            self._pool.release(up, ex.complete)
        host.flow.disarm()  # finish() arms the idle deadline
        self.flush()
        ex.state = DONE_STATE  # checked: RELAYING
        host.finish(ex.resp_close)

    def upstream_lost(self, clean_eof: bool) -> None:
        conn, self.up = self.up, None
        host = self._host
        ex = host.active
        if ex is None or host.gone:
            return
        if ex.state == RELAYING:
            if ex.resp_framing == F_CLOSE and clean_eof:
                self._end_body(ex)
                self.flush()
                ex.advance(RESPONSE_DONE)
                host.finish(ex.resp_close)
            else:
                self.flush()
                host.abort_exchange()  # a truncated response must not look complete
            return
        head = ex.head
        if (conn is not None and conn.reused and not ex.retried and ex.complete and head is not None
                and not head.has_body and self._pool is not None):
            ex.retried = True  # a stale keep-alive connection: one retry on a fresh one
            ex.advance(RETRY)
            self._pool.acquire(self)
            return
        self._count_error()
        host.error_now(502)

    # ------------------------------------------------------------------ WebSocket
    def response_upgrade(self, status: int, headers: Headers, rest: bytes) -> None:
        host = self._host
        ex = host.active
        conn = self.up
        fwd = ex.fwd if ex is not None else None
        facts = ex.facts if ex is not None else None
        ok = (ex is not None and ex.state == UPSTREAM and fwd is not None and facts is not None and status == 101
              and facts.websocket)
        if ok and facts is not None:
            accept = None
            for k, v in headers:
                if k.lower() == b"sec-websocket-accept":
                    accept = v.strip()
            ok = accept is not None and facts.ws_key is not None and accept == ws_accept(facts.ws_key)
        if not ok or ex is None or fwd is None or conn is None:
            log.warn("upstream answered {status} with a wrong or missing Sec-WebSocket-Accept: refused",
                     status=status)
            self.up = None
            if conn is not None:
                conn.abort()
            self._count_error()
            host.error_now(502)
            return
        f = host.factory
        hs = clean_response_headers(headers, keep_upgrade=True)
        if fwd.on_response is not None:
            extra = fwd.on_response(101, hs)
            if extra:
                hs = hs + list(extra)
        host.write(status_line(101) + render_headers(hs) + b"Connection: Upgrade\r\n\r\n")
        ex.advance(UPGRADE)
        ex.status = 101
        ex.t_head = host.clock.seconds()
        if f.request_done is not None:
            f.request_done(host, ex)
        tunnel = WebSocketTunnel(host, conn, host.clock, on_closed=f.tunnels.remove, idle_timeout=f.ws_idle_timeout)
        tunnel.session_id = fwd.session_id
        tunnel.observer = fwd.on_client_data
        tunnel.fingerprint = host.identity.fingerprint
        conn.tunnel = tunnel
        host.become_tunnel(tunnel)
        f.tunnels.add(tunnel.session_id, tunnel.fingerprint, tunnel)
        f.counters["tunnels"] += 1
        f.m_tunnels.inc()
        if rest:
            tunnel.from_upstream(rest)
        host.tunnel_open()

