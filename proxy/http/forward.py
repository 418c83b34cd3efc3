"""Forwarding half of :class:`proxy.http.connection.GatewayProtocol`: request out, response back, 101 splice.

Kept apart from the connection/parsing half only for size. Guarantees:

- the upstream request head is built in one bytes join after header hygiene
  (:mod:`proxy.http.headers`); framing is ``Content-Length`` as received, chunked re-encoded from the
  parser's body callbacks, or (unauthenticated chunked bodies, at most
  ``max_body_unauthenticated`` bytes) collected first and sent with ``Content-Length``;
- the response is relayed with its framing tracked: ``Content-Length`` passed through, chunked
  re-encoded, read-until-close turned into chunked for HTTP/1.1 clients; at most one write to
  the client per upstream read (head and body of a small response go together);
- a pooled connection is reused only after a cleanly finished exchange;
- a WebSocket tunnel starts only after ``101`` with the right ``Sec-WebSocket-Accept``.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from proxy.http.flow import K_BODY as _K_BODY, K_UPSTREAM as _K_UPSTREAM
from proxy.http.flow import P_BUFFER as _P_BUFFER, P_RAW as _P_RAW
from proxy.http.wire import CONTINUE_100, status_line
from proxy.http.headers import (HeaderValueError, certgate_headers, clean_request_headers, clean_response_headers,
                           render_headers)
from proxy.http.messages import Forward
from proxy.http.tunnel import WebSocketTunnel, ws_accept
from proxy.http.upstream import F_CLOSE, F_LENGTH, F_NONE

log = Logger()

_WS_UPGRADE = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
_TE_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"


class ForwardMixin:
    """Methods mixed into GatewayProtocol; they use its attributes (see proxy.http.connection)."""

    __slots__ = ()

    # ------------------------------------------------------------------ request out
    def _forward(self, r: Any, fwd: Forward) -> None:
        f = self.factory  # type: ignore[attr-defined]
        facts = r.facts
        if facts.websocket and f.ws_origins and facts.origin not in f.ws_origins:
            self._error_now(403)  # type: ignore[attr-defined]
            return
        authed = fwd.account is not None or fwd.session_id is not None
        limit = (f.max_body or None) if authed else f.max_body_unauth
        cl = facts.content_length
        if limit is not None and cl is not None and cl > limit:
            self._error_now(413)  # type: ignore[attr-defined]
            return
        r.limit = limit
        self._fwd = fwd
        if facts.chunked and not authed:
            # Unauthenticated chunked body: collect (bounded) before anything goes upstream.
            if r.complete:
                r.received = r.buffered
                self._forward_go(r, True)
                return
            if r.buffered > limit:
                self._error_now(413)  # type: ignore[attr-defined]
                return
            r.received = r.buffered
            r.sink = self._collect_sink  # type: ignore[attr-defined]
            r.on_complete = lambda: self._forward_go(r, True)
            if facts.expect_continue:
                self.transport.write(CONTINUE_100)  # type: ignore[attr-defined]
            self._arm(_K_BODY, f.idle_timeout)  # type: ignore[attr-defined]
            self._resume(_P_BUFFER)  # type: ignore[attr-defined]
            return
        self._forward_go(r, False)

    def _forward_go(self, r: Any, dechunk: bool) -> None:
        f = self.factory  # type: ignore[attr-defined]
        fwd = self._fwd
        if fwd is None or self.gone:  # type: ignore[attr-defined]
            return
        head = r.head
        facts = r.facts
        route: Any = fwd.route
        policy = f.header_policy
        sets = fwd.set_headers
        hs = clean_request_headers(head.headers, policy, [k for k, _ in sets] if sets else ())
        host = facts.host
        if not policy.preserve_host or host is None:
            hs = [(k, v) for k, v in hs if k.lower() != b"host"]
            default_port = 443 if route.scheme == "https" else 80
            up_host = route.host if route.port == default_port else f"{route.host}:{route.port}"
            hs.insert(0, (b"Host", up_host.encode("idna")))
        key = (fwd.account, host)
        if not sets and key == self._ours_key:
            ours = self._ours  # same identity headers as the previous request on this connection
        else:
            try:
                ours = render_headers(certgate_headers(policy, self.identity, fwd.account, host,  # type: ignore[attr-defined]
                                                       sets))
            except HeaderValueError as e:
                log.error("refusing to forward: {why}", why=str(e))
                self._error_now(500)  # type: ignore[attr-defined]
                return
            if not sets:
                self._ours_key, self._ours = key, ours
        if dechunk:
            framing = b"Content-Length: %d\r\n" % r.received if r.received or head.method not in (b"GET", b"HEAD") \
                else b""
        elif facts.chunked:
            framing = _TE_CHUNKED
        elif facts.content_length is not None:
            framing = b"Content-Length: %d\r\n" % facts.content_length
        else:
            framing = b""
        if facts.websocket:
            framing += _WS_UPGRADE
        # The canonical target the gate decided on (proxy.http.paths); the raw one only when unsafe.
        target = r.raw_target if route.unsafe_forward_raw_target else head.target
        if route.base_path and target != b"*":
            target = route.base_path.encode("latin-1") + target
        self._up_head = b"".join((head.method, b" ", target, b" HTTP/1.1\r\n", render_headers(hs),
                                  ours, framing, b"\r\n"))
        self._dechunk = dechunk
        self._pool = f.pools.pool_for(route)
        self._pool.acquire(self)
        if self._up is None and self._active is r:
            # Connecting or waiting for a free connection (max_connections): bounded too.
            self._arm(_K_UPSTREAM, route.connect_timeout + route.read_timeout)  # type: ignore[attr-defined]

    def upstream_ready(self, conn: Any) -> None:
        r = self._active  # type: ignore[attr-defined]
        if r is None or self.gone or self._fwd is None:  # type: ignore[attr-defined]
            self._pool.release(conn, True)
            return
        self._up = conn
        r.t_up = self._clock.seconds()  # type: ignore[attr-defined]
        head = r.head
        conn.head_request = head.method == b"HEAD"
        if r.facts.websocket:
            conn.reusable = False
        if self._write_paused:  # type: ignore[attr-defined]
            conn.pause_reading()
        chunked = r.facts.chunked and not self._dechunk
        chunks = r.chunks
        if chunks:
            if chunked:
                out = [self._up_head]
                for c in chunks:
                    out += (b"%x\r\n" % len(c), c, b"\r\n")
            else:
                out = [self._up_head, *chunks]
            if r.complete and chunked:
                out.append(_LAST_CHUNK)
            conn.write(b"".join(out))
            self._drop_buffered(r)  # type: ignore[attr-defined]
        elif r.complete and chunked:
            conn.write(self._up_head + _LAST_CHUNK)
        else:
            conn.write(self._up_head)
        if r.complete:
            self._arm(_K_UPSTREAM, self._fwd.route.read_timeout)  # type: ignore[attr-defined,attr-defined]
        else:
            r.sink = self._chunk_sink if chunked else conn.write
            r.on_complete = self._body_sent
            if r.facts.expect_continue:
                self.transport.write(CONTINUE_100)  # type: ignore[attr-defined]
            self._arm(_K_BODY, self.factory.idle_timeout)  # type: ignore[attr-defined]
        self._resume(_P_BUFFER)  # type: ignore[attr-defined]

    def _chunk_sink(self, data: bytes) -> None:
        r = self._incoming  # type: ignore[attr-defined]
        up = self._up
        if r is None or up is None:
            return
        r.received += len(data)
        if r.limit is not None and r.received > r.limit:
            r.sink = None
            self._fail_active(413)  # type: ignore[attr-defined]
            return
        up.transport.writeSequence((b"%x\r\n" % len(data), data, b"\r\n"))

    def _body_sent(self) -> None:
        up = self._up
        if up is None:
            return
        r = self._active  # type: ignore[attr-defined]
        if r is not None and r.facts.chunked and not self._dechunk:
            up.write(_LAST_CHUNK)
        if not self._out_started_flag and self._fwd is not None:
            self._arm(_K_UPSTREAM, self._fwd.route.read_timeout)  # type: ignore[attr-defined]

    def upstream_failed(self, status: int) -> None:
        if self.gone or self._active is None:  # type: ignore[attr-defined]
            return
        self.factory.counters["upstream_errors"] += 1  # type: ignore[attr-defined]
        self.factory.m_upstream_errors.inc()  # type: ignore[attr-defined]
        self._error_now(status)  # type: ignore[attr-defined]

    def _cancel_upstream(self) -> None:
        up, self._up = self._up, None
        if up is not None:
            up.abort()
        elif self._fwd is not None and self._pool is not None:
            self._pool.cancel(self)

    def _out_started(self) -> bool:
        return self._out_started_flag

    def _timeout_upstream(self) -> None:
        if self._active is None:  # type: ignore[attr-defined]
            return
        if self._out_started_flag:
            self._cancel_upstream()
            self.abort()  # type: ignore[attr-defined]
        else:
            self.factory.counters["upstream_errors"] += 1  # type: ignore[attr-defined]
            self.factory.m_upstream_errors.inc()  # type: ignore[attr-defined]
            self._error_now(504)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ response back
    def response_head(self, status: int, headers: list[tuple[bytes, bytes]], framing: int, length: int) -> None:
        r = self._active  # type: ignore[attr-defined]
        fwd = self._fwd
        if r is None or fwd is None:
            return
        self._out_started_flag = True
        r.status = status
        r.t_head = self._clock.seconds()  # type: ignore[attr-defined]
        head = r.head
        close = (self._closing or not r.facts.keep_alive or not r.complete  # type: ignore[attr-defined]
                 or self._age_exceeded())  # type: ignore[attr-defined]
        hs = clean_response_headers(headers)
        if fwd.on_response is not None:
            extra = fwd.on_response(status, hs)
            if extra:
                hs = hs + list(extra)
        parts = [status_line(status), render_headers(hs)]
        self._rechunk = False
        client_framing = framing
        self._inject = None
        f = self.factory  # type: ignore[attr-defined]
        if (f.inject_presence and framing != F_NONE and (fwd.session_id is not None or fwd.presence_await)
                and head.method == b"GET"
                and (f.presence_kinds is None or getattr(fwd.route, "kind", None) in f.presence_kinds)):
            from proxy.sessions.presence import HtmlInjector, should_inject

            if should_inject(status, hs):
                # The page grows by a script tag: its length is unknown, send it chunked.
                self._inject = HtmlInjector(f.presence_interval, await_session=fwd.session_id is None)
                client_framing = F_CLOSE
        if client_framing == F_NONE:
            if length >= 0 and head.method == b"HEAD":
                parts.append(b"Content-Length: %d\r\n" % length)
        elif client_framing == F_LENGTH:
            parts.append(b"Content-Length: %d\r\n" % length)
        elif head.version == b"1.1":
            parts.append(_TE_CHUNKED)
            self._rechunk = True
        else:
            close = True
        if close:
            parts.append(_CLOSE)
        elif head.version == b"1.0":
            parts.append(_KEEP_ALIVE)
        parts.append(b"\r\n")
        self._out.append(b"".join(parts))  # type: ignore[attr-defined]
        self._resp_close = close
        self._resp_framing = framing

    def response_body(self, data: bytes) -> None:
        r = self._active  # type: ignore[attr-defined]
        if r is not None:
            r.out_bytes += len(data)
        if self._inject is not None:
            data = self._inject.feed(data)
            if not data:
                return
        if self._rechunk:
            self._out += (b"%x\r\n" % len(data), data, b"\r\n")  # type: ignore[attr-defined]
        else:
            self._out.append(data)  # type: ignore[attr-defined]

    def flush(self) -> None:
        out = self._out  # type: ignore[attr-defined]
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[attr-defined]
            out.clear()
        if self._dl_kind == _K_UPSTREAM and self._fwd is not None:  # type: ignore[attr-defined]
            self._arm(_K_UPSTREAM, self._fwd.route.read_timeout)  # type: ignore[attr-defined]

    def _finish_inject(self) -> None:
        inj, self._inject = self._inject, None
        if inj is not None:
            tail = inj.finish()
            if tail:
                self.response_body(tail)

    def response_done(self) -> None:
        self._finish_inject()
        if self._rechunk:
            self._out.append(_LAST_CHUNK)  # type: ignore[attr-defined]
        up, self._up = self._up, None
        r = self._active  # type: ignore[attr-defined]
        if up is not None:
            self._pool.release(up, r is not None and r.complete)
        self._dl_kind = 0  # type: ignore[attr-defined]  # K_NONE: _finish arms the idle deadline
        self.flush()
        self._finish(self._resp_close)  # type: ignore[attr-defined]

    def upstream_lost(self, clean_eof: bool) -> None:
        conn, self._up = self._up, None
        r = self._active  # type: ignore[attr-defined]
        if r is None or self.gone:  # type: ignore[attr-defined]
            return
        if self._out_started_flag:
            if self._resp_framing == F_CLOSE and clean_eof:
                self._finish_inject()
                if self._rechunk:
                    self._out.append(_LAST_CHUNK)  # type: ignore[attr-defined]
                self.flush()
                self._finish(self._resp_close)  # type: ignore[attr-defined]
            else:
                self.flush()
                self.abort()  # type: ignore[attr-defined]  # a truncated response must not look complete
            return
        if conn is not None and conn.reused and not r.retried and r.complete and not r.head.has_body:
            r.retried = True  # a stale keep-alive connection: one retry on a fresh one
            self._pool.acquire(self)
            return
        self.factory.counters["upstream_errors"] += 1  # type: ignore[attr-defined]
        self.factory.m_upstream_errors.inc()  # type: ignore[attr-defined]
        self._error_now(502)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ WebSocket
    def response_upgrade(self, status: int, headers: list[tuple[bytes, bytes]], rest: bytes) -> None:
        r = self._active  # type: ignore[attr-defined]
        conn = self._up
        fwd = self._fwd
        ok = r is not None and fwd is not None and status == 101 and r.facts.websocket
        if ok:
            accept = None
            for k, v in headers:
                if k.lower() == b"sec-websocket-accept":
                    accept = v.strip()
            ok = accept is not None and accept == ws_accept(r.facts.ws_key)
        if not ok:
            log.warn("upstream answered {status} with a wrong or missing Sec-WebSocket-Accept: refused",
                     status=status)
            self._up = None
            if conn is not None:
                conn.abort()
            self.factory.counters["upstream_errors"] += 1  # type: ignore[attr-defined]
            self.factory.m_upstream_errors.inc()  # type: ignore[attr-defined]
            self._error_now(502)  # type: ignore[attr-defined]
            return
        f = self.factory  # type: ignore[attr-defined]
        hs = clean_response_headers(headers, keep_upgrade=True)
        if fwd.on_response is not None:  # type: ignore[union-attr]
            extra = fwd.on_response(101, hs)  # type: ignore[union-attr]
            if extra:
                hs = hs + list(extra)
        self.transport.write(status_line(101) + render_headers(hs) + b"Connection: Upgrade\r\n\r\n")  # type: ignore[attr-defined]
        r.status = 101  # type: ignore[union-attr]
        r.t_head = self._clock.seconds()  # type: ignore[union-attr,attr-defined]
        if f.request_done is not None:
            f.request_done(self, r)
        tunnel = WebSocketTunnel(self, conn, self._clock, on_closed=self._tunnel_closed,  # type: ignore[arg-type,attr-defined]
                                 idle_timeout=f.ws_idle_timeout)
        tunnel.session_id = fwd.session_id  # type: ignore[union-attr]
        tunnel.observer = fwd.on_client_data  # type: ignore[union-attr]
        tunnel.fingerprint = self.identity.fingerprint  # type: ignore[attr-defined]
        conn.tunnel = tunnel
        self._tunnel = tunnel
        self._dl_kind = 0  # type: ignore[attr-defined]  # K_NONE: the tunnel has its own idle timer
        self._queue.clear()  # type: ignore[attr-defined]
        self._active = None  # type: ignore[attr-defined]
        f.tunnels.add(tunnel.session_id, tunnel.fingerprint, tunnel)
        f.counters["tunnels"] += 1
        f.m_tunnels.inc()
        if rest:
            tunnel.from_upstream(rest)
        raw, self._raw = b"".join(self._raw), []  # type: ignore[attr-defined]
        if raw:
            tunnel.from_client(raw)
        self._resume(_P_RAW)  # type: ignore[attr-defined]
        self._resume(_P_BUFFER)  # type: ignore[attr-defined]

    def _tunnel_closed(self, tunnel: Any) -> None:
        self.factory.tunnels.remove(tunnel)  # type: ignore[attr-defined]

    def _after_upgrade_refused(self) -> None:
        """A WebSocket request got a normal answer: go back to HTTP with the held bytes."""
        if self._feeding or self._closing:  # type: ignore[attr-defined]
            return  # dataReceived resumes parsing after the current feed
        self._new_parser()  # type: ignore[attr-defined]
        self._resume(_P_RAW)  # type: ignore[attr-defined]
        self._arm_idle()  # type: ignore[attr-defined]
        raw, self._raw = b"".join(self._raw), []  # type: ignore[attr-defined]
        if raw:
            self.dataReceived(raw)  # type: ignore[attr-defined]
