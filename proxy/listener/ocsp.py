"""OCSP fetching for the handshake: an HTTP POST per uncached certificate, with a deadline.

:class:`OcspChecker` is the seam between the TLS layer and :mod:`trust.ocsp` (pure): it
serves fresh answers from the bounded cache synchronously, and otherwise starts one fetch
per (leaf, issuer) - concurrent handshakes for the same certificate share it - whose
Deferred always fires with an :class:`~trust.ocsp.OcspResult` (never an error) no later
than ``ocsp_timeout`` seconds after it started. Every fetched outcome is counted
(``certgate_ocsp_checks_total``), logged and written to the audit log; cache hits are counted.

Nothing here blocks the reactor: the POST goes through ``twisted.web.client.Agent``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Protocol, cast

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol as _Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from proxy.clock import Clock
from trust import certinfo, ocsp as O

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.interfaces import IReactorTCP, IReactorTime

    from proxy.observe.audit import Audit
    from proxy.observe.metrics import Metrics


class _Consumer(Protocol):
    def write(self, data: bytes) -> None: ...

_log = Logger(namespace="certgate.ocsp")


class Fetcher(Protocol):
    """POSTs an OCSP request; the Deferred fires with the response body or fails."""

    def post(self, url: str, body: bytes, timeout: float) -> "Deferred[bytes]": ...


class HTTPStatusError(Exception):
    """The responder answered with an HTTP status other than 200."""


class TooLarge(Exception):
    """The responder's body exceeded :data:`trust.ocsp.MAX_RESPONSE_BYTES`."""


@implementer(IBodyProducer)
class _Bytes:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: _Consumer) -> "Deferred[None]":
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _body_producer(transport: object) -> IPushProducer:
    """The transport ``IResponse.deliverBody`` gives a body protocol: an IPushProducer (Twisted
    types ``Protocol.transport`` as ITransport, which has no ``stopProducing``)."""
    return cast(IPushProducer, transport)


class _Limited(_Protocol):
    def __init__(self, done: "Deferred[bytes]", limit: int) -> None:
        self.done, self.limit = done, limit
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            assert self.transport is not None  # set by deliverBody before any data
            _body_producer(self.transport).stopProducing()
            if not self.done.called:
                self.done.errback(TooLarge(f"more than {self.limit} bytes"))
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.done.called:
            return
        if reason is not None and reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


class AgentFetcher:
    """:class:`Fetcher` over ``twisted.web.client.Agent`` (no persistent connections).

    The deadline is the caller's: cancelling the Deferred aborts the connection at any
    stage (connect, send, read). ``timeout`` also bounds the TCP connect.
    """

    def __init__(self, reactor: "IReactorTCP") -> None:
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=False)

    def post(self, url: str, body: bytes, timeout: float) -> "Deferred[bytes]":
        agent = Agent(self._reactor, connectTimeout=timeout, pool=self._pool)
        headers = Headers({b"Content-Type": [b"application/ocsp-request"],
                           b"Accept": [b"application/ocsp-response"]})
        # zope's @implementer is invisible to mypy: the cast states what the decorator declares
        d = agent.request(b"POST", url.encode("ascii"), headers, cast(IBodyProducer, _Bytes(body)))

        def read(response: Any) -> "Deferred[bytes]":  # an IResponse (zope: opaque to mypy)
            if response.code != 200:
                response.deliverBody(_Protocol())  # discard
                raise HTTPStatusError(f"HTTP {response.code}")
            if response.length is not UNKNOWN_LENGTH and response.length > O.MAX_RESPONSE_BYTES:
                raise TooLarge(f"Content-Length {response.length}")
            proto: _Limited

            def cancel(_: object) -> None:
                if proto.transport is not None:
                    _body_producer(proto.transport).stopProducing()

            done: Deferred[bytes] = Deferred(cancel)
            proto = _Limited(done, O.MAX_RESPONSE_BYTES)
            response.deliverBody(proto)
            return done

        return d.addCallback(read)


def _describe_failure(f: Failure, url: str, timeout: float) -> O.OcspResult:
    if f.check(TimeoutError, CancelledError):
        return O.OcspResult("ocsp-timeout", f"the OCSP responder {url} did not answer within {timeout:g}s",
                            responder=url)
    if f.check(HTTPStatusError):
        return O.OcspResult("ocsp-http-error", f"the OCSP responder {url} answered {f.value}", responder=url)
    if f.check(TooLarge):
        return O.OcspResult("ocsp-malformed", f"the OCSP responder {url} sent a response that is too large "
                                              f"({f.value})", responder=url)
    if f.check(ConnectError, DNSLookupError, ConnectingCancelledError, OSError):
        why = f.getErrorMessage() or type(f.value).__name__
        return O.OcspResult("ocsp-unreachable", f"the OCSP responder {url} is unreachable: {why}", responder=url)
    why = f.getErrorMessage() or type(f.value).__name__
    return O.OcspResult("ocsp-unreachable", f"the OCSP responder {url} failed: {why}", responder=url)


class OcspChecker:
    """Cache + deduplicated fetches + accounting (metrics, audit, log) for OCSP answers.

    ``clock.seconds()`` is the time for validation and the cache; ``fetcher`` does the I/O.
    ``metrics`` is a :class:`proxy.observe.metrics.Metrics`-like registry, ``audit`` an
    :class:`proxy.observe.audit.Audit`-like recorder (both optional). ``nonce_source(n)`` gives
    random bytes.
    """

    def __init__(self, settings: O.OcspSettings, clock: Clock, fetcher: Fetcher, *,
                 metrics: "Metrics | None" = None, audit: "Audit | None" = None, log: Logger | None = None,
                 nonce_source: Callable[[int], bytes] = os.urandom) -> None:
        self.settings = settings
        self.clock = clock
        self.fetcher = fetcher
        self.cache = O.OcspCache(settings.cache_size)
        self.audit = audit
        self.log = log or _log
        self._nonce = nonce_source
        self._inflight: dict[tuple[str, str], list[Deferred[O.OcspResult]]] = {}
        self.fetches = 0
        # The one place OCSP metrics are declared: outcome by source (cache | responder).
        self._family = metrics.counter("ocsp_checks_total", "OCSP checks of client certificates by result "
                                       "and source", ("result", "source")) if metrics is not None else None

    def _count(self, result: O.OcspResult, source: str) -> None:
        if self._family is not None:
            self._family.labels(result.code, source).inc()

    def cached(self, plan: O.OcspPlan, now: float) -> O.OcspResult | None:
        """The fresh cached answer for ``plan``, or None (then :meth:`fetch`)."""
        hit = self.cache.get(plan.key, now)
        if hit is not None:
            self._count(hit, "cache")
        return hit

    def fetch(self, plan: O.OcspPlan) -> "Deferred[O.OcspResult]":
        """Ask the responder (sharing an in-flight request for the same certificate).

        The Deferred fires with the validated result, or with an error result (unreachable,
        timeout, bad response...) within ``settings.timeout``; it never fails.
        """
        waiter: Deferred[O.OcspResult] = Deferred()
        waiting = self._inflight.get(plan.key)
        if waiting is not None:
            waiting.append(waiter)
            return waiter
        self._inflight[plan.key] = [waiter]
        if plan.url is None:
            self.clock.callLater(0, self._finish, plan, O.no_responder(plan))
            return waiter
        nonce = self._nonce(16) if plan.nonce else None
        try:
            body = O.build_request(plan.leaf, plan.issuer, nonce)
            d = self.fetcher.post(plan.url, body, self.settings.timeout)
        except Exception as exc:  # a bad URL or request must not escape into the handshake
            self.clock.callLater(0, self._finish, plan, O.OcspResult(
                "ocsp-unreachable", f"cannot send an OCSP request to {plan.url}: {exc}", responder=plan.url))
            return waiter
        self.fetches += 1
        # The deadline: whatever failure the cancellation surfaces as (Agent wraps it), it is a timeout.
        # a zope interface in twisted's annotation: the clock provides it, mypy cannot see that
        d.addTimeout(self.settings.timeout, cast("IReactorTime", self.clock),
                     onTimeoutCancel=lambda _r, t: Failure(TimeoutError(f"{t:g}s")))
        url = plan.url
        checked = d.addCallbacks(self._validate, _describe_failure, callbackArgs=(plan, nonce),
                                 errbackArgs=(url, self.settings.timeout))
        checked.addErrback(lambda f: O.OcspResult("ocsp-malformed", f"the OCSP response cannot be checked: "
                                                                    f"{f.getErrorMessage()}", responder=url))
        checked.addCallback(lambda result: self._finish(plan, result))
        return waiter

    def _validate(self, data: bytes, plan: O.OcspPlan, nonce: bytes | None) -> O.OcspResult:
        s = self.settings
        return O.validate(data, plan.leaf, plan.issuer, nonce=nonce, now=O.to_datetime(self.clock.seconds()),
                          clock_skew=s.clock_skew, max_age=s.max_age, url=plan.url)

    def _finish(self, plan: O.OcspPlan, result: O.OcspResult) -> None:
        waiters = self._inflight.pop(plan.key, [])
        self.cache.put(plan.key, result, self.clock.seconds())
        self._count(result, "responder")
        subject = certinfo.label(plan.leaf.subject)
        if self.audit is not None:
            self.audit.record("ocsp", result.code, result.code, fingerprint=plan.key[0], subject=subject,
                              responder=plan.url, rule=plan.rule, mode=plan.mode, message=result.message)
        if result.code != O.GOOD:
            self.log.info("OCSP check of {subject} (sha256 {fp}, [ocsp] rule {rule}, mode {mode}): {code}: "
                          "{message}", subject=subject, fp=plan.key[0], rule=plan.rule, mode=plan.mode,
                          code=result.code, message=result.message)
        for w in waiters:
            w.callback(result)
