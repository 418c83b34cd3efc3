"""proxy.listener.ocsp.OcspChecker with an injected Clock: deadline, shared fetches, cache, accounting.

The fetcher here is a recording double (the real HTTP path is exercised against `openssl
ocsp` in tests/blackbox/test_ocsp_gateway.py); the responses it returns are real, signed
OCSP responses for real certificates.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from proxy.observe.audit import memory_audit
from proxy.observe.metrics import Metrics
from proxy.listener.ocsp import HTTPStatusError, OcspChecker
from tests.ocsp_support import make_response
from trust import issue as I
from trust import ocsp as O

START = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
NONCE = b"n" * 16


class Fetcher:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.posts: list[tuple[str, bytes, float]] = []
        self.cancelled = 0

    def post(self, url: str, body: bytes, timeout: float) -> "Deferred[bytes]":
        self.posts.append((url, body, timeout))
        if self.answer is None:  # never answers; counts cancellations
            return Deferred(lambda _: setattr(self, "cancelled", self.cancelled + 1))
        return self.answer() if callable(self.answer) else succeed(self.answer)


def _setup(answer: Any, **settings: Any) -> tuple[OcspChecker, Fetcher, Clock, O.OcspPlan, Metrics, Any]:
    clock = Clock()
    clock.advance(START.timestamp())
    ca = I.ca("checker CA", not_before=START - dt.timedelta(days=1))
    leaf = I.client(ca, "alice", not_before=START - dt.timedelta(days=1), days=10)
    if answer == "good":
        answer = make_response(leaf.cert, ca.cert, ca, this_update=START, next_update=START + dt.timedelta(minutes=10),
                               nonce=NONCE)
    fetcher = Fetcher(answer)
    metrics, audit = Metrics(), memory_audit(clock.seconds)
    checker = OcspChecker(O.OcspSettings(mode="hard", **settings), clock, fetcher, metrics=metrics, audit=audit,
                          nonce_source=lambda n: NONCE)
    plan = O.OcspPlan(key=(leaf.fingerprint, ca.fingerprint), leaf=leaf.cert, issuer=ca.cert, mode="hard",
                      url="http://ocsp.test/", nonce=True, rule="trust")
    return checker, fetcher, clock, plan, metrics, audit


def _result(d: "Deferred[O.OcspResult]") -> O.OcspResult:
    out: list[O.OcspResult] = []
    d.addCallback(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


def test_deadline_cancels_the_fetch_and_answers_timeout() -> None:
    checker, fetcher, clock, plan, metrics, audit = _setup(None, timeout=2.0)
    d = checker.fetch(plan)
    assert not d.called and fetcher.posts[0][2] == 2.0
    clock.advance(1.9)
    assert not d.called
    clock.advance(0.2)
    r = _result(d)
    assert r.code == "ocsp-timeout" and "within 2s" in r.message and fetcher.cancelled == 1
    assert metrics.value("ocsp_checks_total", "ocsp-timeout", "responder") == 1
    assert audit.records[-1]["event"] == "ocsp" and audit.records[-1]["decision"] == "ocsp-timeout"
    assert len(checker.cache) == 0  # errors are never cached


def test_concurrent_checks_share_one_fetch_and_the_answer_is_cached() -> None:
    checker, fetcher, clock, plan, metrics, _ = _setup("good")
    slow: Deferred[bytes] = Deferred()
    real = fetcher.answer
    fetcher.answer = lambda: slow
    a, b = checker.fetch(plan), checker.fetch(plan)
    assert len(fetcher.posts) == 1 and not a.called
    slow.callback(real)
    assert _result(a).code == "good" and _result(b).code == "good"
    assert checker.cached(plan, clock.seconds()) is not None
    assert metrics.value("ocsp_checks_total", "good", "cache") == 1
    clock.advance(600)  # nextUpdate reached: fetch again
    assert checker.cached(plan, clock.seconds()) is None


def test_the_request_carries_the_nonce_and_the_answer_must_echo_it() -> None:
    checker, fetcher, _, plan, _, _ = _setup("good")
    from cryptography import x509
    from cryptography.x509 import ocsp

    assert _result(checker.fetch(plan)).code == "good"
    req = ocsp.load_der_ocsp_request(fetcher.posts[0][1])
    assert req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == NONCE
    other = OcspChecker(checker.settings, checker.clock, fetcher, nonce_source=lambda n: b"x" * n)
    assert _result(other.fetch(plan)).code == "ocsp-nonce-mismatch"


def test_failures_become_results() -> None:
    for answer, code in ((lambda: fail(ConnectionRefusedError()), "ocsp-unreachable"),
                         (lambda: fail(HTTPStatusError("HTTP 500")), "ocsp-http-error"),
                         (b"garbage", "ocsp-malformed")):
        checker, _, _, plan, _, _ = _setup(answer)
        assert _result(checker.fetch(plan)).code == code


def test_no_responder_answers_on_the_next_turn() -> None:
    checker, fetcher, clock, plan, _, _ = _setup("good")
    from dataclasses import replace

    d = checker.fetch(replace(plan, url=None))
    assert not d.called
    clock.advance(0)
    assert _result(d).code == "ocsp-no-responder" and not fetcher.posts
