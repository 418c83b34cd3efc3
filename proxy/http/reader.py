"""The request reader of a client connection (:class:`RequestReader`): llhttp's target, one exchange per head.

The connection feeds it client bytes while HTTP is parsed. It enforces the head limits of
``[limits]`` (414, 431), arms the header deadline (slowloris), checks each head
(:func:`proxy.http.wire.check_request`), makes its :class:`~proxy.http.exchange.Exchange` and
hands it to the connection (``admit``), and routes body bytes by the exchange's ``body_mode``:
held, collected, discarded, or streamed upstream by the forwarding part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httptools
from twisted.logger import Logger
from twisted.python.failure import Failure

from proxy.http.exchange import B_BUFFER, B_COLLECT, B_DISCARD, B_IGNORE, Exchange
from proxy.http.flow import K_BODY, K_HEADER
from proxy.http.messages import RequestHead
from proxy.http.wire import check_request

if TYPE_CHECKING:  # pragma: no cover
    from proxy.http.parts import Host

log = Logger()

_NO_HEADERS: list[tuple[bytes, bytes]] = []  # shared placeholder, replaced per request


class _Limit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class RequestReader:
    """A :class:`proxy.http.parts.Reading`: parses requests for one connection.

    Guarantees: a head over a limit is refused with its status (nothing after it is parsed);
    each accepted head becomes exactly one exchange, admitted in order; body bytes reach only
    the exchange whose head they follow (``incoming``). Does not decide anything about a request.
    """

    __slots__ = ("_host", "_parser", "parsing", "feeding", "incoming", "buffered", "_hdrs", "_url", "_hsize",
                 "_in_head", "_raw_guard", "_head_armed")

    def __init__(self, host: "Host") -> None:
        self._host = host
        self._parser: Any = None  # created at the first request byte (httptools has no types)
        self.parsing = False
        self.feeding = False  # inside feed(): the connection resumes parsing after it returns
        self.incoming: Exchange | None = None  # the exchange whose body the parser delivers
        self.buffered = 0  # body bytes held ahead of their decision, over all exchanges
        self._hdrs: list[tuple[bytes, bytes]] = _NO_HEADERS
        self._url = b""
        self._hsize = 0
        self._in_head = False
        self._raw_guard = 0
        self._head_armed = False

    def restart(self) -> None:
        """Parse HTTP from the next byte on (the llhttp parser itself is made at that byte)."""
        self._parser = None
        self.parsing = True
        self._in_head = False

    def drop_buffered(self, ex: Exchange) -> None:
        """Forget ``ex``'s held body bytes (consumed or discarded)."""
        self.buffered -= ex.buffered
        ex.chunks = []
        ex.buffered = 0

    def feed(self, data: bytes) -> None:
        """Parse ``data`` (only while ``parsing``)."""
        host = self._host
        if self._in_head:
            # Bytes of a head that began in an earlier read (exact limits are in the callbacks).
            self._raw_guard += len(data)
            if self._raw_guard > host.factory.max_head:
                host.parse_failed(431 if self._hdrs else 414)
                return
        elif host.flow.kind == K_BODY:
            host.flow.arm(K_BODY, host.factory.idle_timeout)
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        self.feeding = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self.feeding = False
            host.upgraded(data[e.args[0]:])
        except httptools.HttpParserCallbackError as e:
            self.feeding = False
            ctx = e.__context__
            if isinstance(ctx, _Limit):
                host.parse_failed(ctx.status)
            else:
                log.failure("internal error while parsing a request",
                            Failure(ctx) if isinstance(ctx, BaseException) else None)
                host.parse_failed(500)
        except httptools.HttpParserError as e:
            self.feeding = False
            if host.last_closes() and "after `Connection: close`" in str(e):
                self.parsing = False  # bytes after a request that ends the connection: ignored
            else:
                host.parse_failed(400)
        self.feeding = False
        if self._in_head and not self._head_armed and self.parsing:
            self._head_armed = True  # header deadline, counted from the read that began the head
            host.flow.arm(K_HEADER, host.factory.header_timeout)

    def failed(self) -> Exchange | None:
        """Parsing stops for good; returns the exchange whose body was being read, if any."""
        self.parsing = False
        self._in_head = False
        ex, self.incoming = self.incoming, None
        return ex

    # llhttp callbacks ---------------------------------------------------
    def on_message_begin(self) -> None:
        if not self.parsing:
            return
        self._hdrs = []
        self._url = b""
        self._hsize = 0
        self._in_head = True
        self._raw_guard = 0
        self._head_armed = False  # armed after this read if the head is still incomplete

    def on_url(self, url: bytes) -> None:
        if not self.parsing:
            return
        self._url += url
        if len(self._url) > self._host.factory.max_request_line:
            raise _Limit(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head or not self.parsing:
            return  # trailers of a chunked request body: dropped
        f = self._host.factory
        self._hsize += len(name) + len(value) + 4
        hdrs = self._hdrs
        if len(hdrs) >= f.max_headers or self._hsize > f.max_header_size:
            raise _Limit(431)
        if value[-1:] in b" \t" and value:
            value = value.rstrip(b" \t")
        hdrs.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if not self.parsing:
            return
        host = self._host
        p = self._parser
        method = p.get_method()
        version = p.get_http_version().encode()
        raw = self._url
        facts = check_request(method, raw, version, self._hdrs, p.should_upgrade())
        # Decisions and the forwarded request use the canonical target (proxy.paths), never ``raw``.
        head = RequestHead(method, facts.target or raw, version, self._hdrs, facts.websocket, facts.keep_alive,
                           facts.chunked or bool(facts.content_length))
        self._hdrs = _NO_HEADERS  # the head owns them now; an idle connection keeps nothing
        self._url = b""
        ex = Exchange(head, facts, facts.error)
        ex.raw_target = raw
        if facts.why:
            log.info("request refused ({status}) from {ip}: {why}; target {target}", status=facts.error,
                     ip=getattr(host.identity, "client_ip", "?"), why=facts.why, target=ascii(raw[:200]))
        if facts.error:
            self.parsing = False  # framing no longer trusted: nothing after this is parsed
        self.incoming = ex
        host.admit(ex)

    def on_body(self, data: bytes) -> None:
        ex = self.incoming
        if ex is None:
            return
        mode = ex.body_mode
        if mode == B_BUFFER:
            ex.chunks.append(data)
            ex.buffered += len(data)
            self.buffered += len(data)
        elif mode == B_COLLECT:
            ex.chunks.append(data)
            ex.received += len(data)
            if ex.limit is not None and ex.received > ex.limit:
                ex.switch_body(B_IGNORE)
                self._host.error_now(413)
        elif mode == B_DISCARD:
            ex.received += len(data)
            if ex.limit is not None and ex.received > ex.limit:
                ex.switch_body(B_IGNORE)
                self._host.close()
        elif mode != B_IGNORE:
            self._host.forward.body(ex, data)  # B_STREAM, B_CHUNKED

    def on_message_complete(self) -> None:
        ex = self.incoming
        if ex is None:
            return
        self.incoming = None
        ex.complete = True
        if ex.facts is not None and not ex.facts.keep_alive:
            self.parsing = False  # nothing after a request that closes the connection is parsed
        mode = ex.body_mode
        if mode == B_COLLECT:
            ex.switch_body(B_BUFFER)
            if ex.local is not None:
                self._host.local.run(ex)
            else:
                self._host.forward.go(ex, True)
        elif mode > B_DISCARD and mode != B_IGNORE:
            self._host.forward.body_sent(ex)  # B_STREAM, B_CHUNKED
