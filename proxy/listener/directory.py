"""``mapping = ldap`` on the reactor: cached, deadline-bounded directory lookups.

:class:`DirectoryMapper` answers "which account is this certificate?" from

1. its cache (``cache_ttl`` for accounts, ``negative_cache_ttl`` for "no account", each
   bounded in size, oldest entries evicted first): :meth:`peek` is synchronous, so the TLS
   verify callback uses a cached answer inside the handshake (a cached refusal sends the
   alert like any other mapping refusal);
2. otherwise the directory: :meth:`resolve` runs the blocking :class:`~proxy.listener.ldap_client.LdapClient`
   search in a dedicated thread pool (``pool_size`` threads) and fires within ``timeout``
   seconds on the injected clock, whatever the directory does. A directory that is down,
   slow, refuses the bind or answers garbage gives "no account" (fail closed), is logged,
   and is *not* cached: the next connection asks again. Lookups of one certificate in
   flight together share one search. At most ``16 * pool_size`` lookups wait for a thread;
   more fail at once ("directory busy").

How a lookup gates a connection (see :mod:`proxy.listener.tls`): a certificate whose account is not
cached completes the TLS handshake; ``identify()`` then returns a Deferred and the HTTP
layer parses nothing (bytes are held) until the account is known. No account means the
connection is closed (``need``) or carries the refusal reason (``want``), exactly like any
other mapping refusal. The handshake deadline keeps running meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

from cryptography import x509
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from proxy.listener.ldap_client import DirectoryError, LdapClient
from proxy.clock import Clock
from trust.directory import DirectoryEntry, DirectoryQuery, DirectoryRules, build_query, describe_answer, interpret
from trust.mapping import MappingResult
from trust.presented import PresentedCertificate

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.interfaces import IDelayedCall

    from proxy.observe.metrics import Metrics

_log = Logger(namespace="certgate.directory")
#: a directory's answer: the entries found and whether the result was truncated
Answer = tuple[list[DirectoryEntry], bool]
#: the blocking search (``LdapClient.search``)
Search = Callable[[DirectoryQuery], Answer]
_R = TypeVar("_R")


def rules_from(section: Any) -> DirectoryRules:
    """The pure :class:`~trust.directory.DirectoryRules` of an ``[ldap]`` section."""
    return DirectoryRules(styles=tuple(section.styles), altsecid_forms=tuple(section.altsecid_forms),
                          account_attribute=str(section.account_attribute), filter=str(section.filter or ""),
                          certificate_assertion=str(section.certificate_assertion))


class _Cache:
    """fingerprint -> (expires_at, result), at most ``size`` entries, oldest evicted first."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl, self.size = float(ttl), int(size)
        self._d: dict[str, tuple[float, MappingResult]] = {}

    def get(self, key: str, now: float) -> MappingResult | None:
        hit = self._d.get(key)
        if hit is None:
            return None
        if now >= hit[0]:
            del self._d[key]
            return None
        return hit[1]

    def put(self, key: str, result: MappingResult, now: float) -> None:
        if self.ttl <= 0:
            return
        self._d.pop(key, None)
        while len(self._d) >= self.size:
            del self._d[next(iter(self._d))]
        self._d[key] = (now + self.ttl, result)

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        self._d.clear()


class DirectoryMapper:
    """Certificate -> account through the directory; see the module docstring.

    ``search(query)`` is the blocking search (``LdapClient.search`` by default); tests may
    inject another callable with the same contract, and ``in_thread(fn, *args)`` (a Deferred;
    default: the mapper's own thread pool). ``clock`` provides ``seconds()`` and ``callLater``.
    """

    def __init__(self, settings: Any, *, clock: Clock, reactor: Any, search: "Search | None" = None,
                 in_thread: "Callable[..., Deferred[Answer]] | None" = None, metrics: "Metrics | None" = None,
                 log: Logger | None = None) -> None:
        self.settings = settings
        self.rules = rules_from(settings)
        self.clock = clock
        self.reactor = reactor
        self.timeout = float(settings.timeout)
        self.client: LdapClient | None = None
        if search is None:
            self.client = LdapClient(settings)
            search = self.client.search
        self._search = search
        self.positive = _Cache(settings.cache_ttl, settings.cache_size)
        self.negative = _Cache(settings.negative_cache_ttl, settings.negative_cache_size)
        self.pool = ThreadPool(minthreads=0, maxthreads=int(settings.pool_size), name="certgate-ldap")
        self.max_waiting = 16 * int(settings.pool_size)
        self._in_thread = in_thread or (lambda fn, *a: deferToThreadPool(self.reactor, self.pool, fn, *a))
        self._inflight: dict[str, list[Deferred[MappingResult]]] = {}
        self.queries = 0  # searches started (cache misses that reached the directory)
        self.log = log or _log
        self._outcomes: Any = None
        self._latency: Any = None
        if metrics is not None:
            self._outcomes = metrics.counter("directory_lookups_total", "Directory account lookups by outcome",
                                             ("outcome",))
            self._latency = metrics.histogram("directory_lookup_seconds", "Seconds from a directory search's "
                                              "start to its answer (or failure)").labels()

    # -- life
    def start(self) -> None:
        """Start the lookup threads (called when the service starts)."""
        if not self.pool.started:
            self.pool.start()

    def stop(self) -> None:
        """Stop the threads (waits for running searches, each bounded by ``timeout``)."""
        if self.pool.started:
            self.pool.stop()
        if self.client is not None:
            self.client.close()

    def _count(self, outcome: str) -> None:
        if self._outcomes is not None:
            self._outcomes.labels(outcome).inc()

    # -- answers
    def peek(self, fingerprint: str) -> MappingResult | None:
        """The cached answer for this certificate, or None when the directory must be asked."""
        now = self.clock.seconds()
        hit = self.positive.get(fingerprint, now)
        if hit is None:
            hit = self.negative.get(fingerprint, now)
        if hit is not None:
            self._count("cached")
        return hit

    def resolve(self, cert: PresentedCertificate) -> "Deferred[MappingResult]":
        """The account of ``cert`` (a verified certificate): cached, or asked within ``timeout``.

        Uses the certificate's parsed leaf, DER and fingerprint as made in the handshake.
        Never fails: every problem is a MappingResult without an account and with a reason.
        """
        fingerprint = cert.fingerprint
        hit = self.peek(fingerprint)
        if hit is not None:
            return succeed(hit)
        waiting = self._inflight.get(fingerprint)
        d: Deferred[MappingResult] = Deferred()
        if waiting is not None:
            waiting.append(d)
            return d
        leaf = cert.parsed_leaf
        query = (build_query(leaf, cert.der, self.rules) if leaf is not None
                 else MappingResult(None, f"the certificate cannot be read: {cert.parse_error}"))
        if isinstance(query, MappingResult):
            self.negative.put(fingerprint, query, self.clock.seconds())
            self._count("refused")
            return succeed(query)
        if len(self._inflight) >= self.max_waiting:
            self._count("busy")
            return succeed(MappingResult(None, f"the directory is busy ({len(self._inflight)} lookups waiting); "
                                               "refused"))
        self._inflight[fingerprint] = [d]
        self.queries += 1
        self.start()
        timer = self.clock.callLater(self.timeout, self._expired, fingerprint)
        started = self.clock.seconds()
        work = self._in_thread(self._search, query)
        if self._latency is not None:
            work.addBoth(self._observe, started)
        work.addCallbacks(self._answered, self._failed, callbackArgs=(query, fingerprint, timer),
                          errbackArgs=(fingerprint, timer))
        return d

    def _observe(self, result: _R, started: float) -> _R:
        self._latency.observe(max(0.0, self.clock.seconds() - started))
        return result

    def _finish(self, fingerprint: str, result: MappingResult) -> None:
        for d in self._inflight.pop(fingerprint, ()):
            d.callback(result)

    def _expired(self, fingerprint: str) -> None:
        if fingerprint not in self._inflight:
            return
        self._count("timeout")
        self.log.warn("directory lookup for certificate {fp} got no answer within {t:g} s; refused",
                      fp=fingerprint[:16], t=self.timeout)
        self._finish(fingerprint, MappingResult(None, f"the directory did not answer within {self.timeout:g} s"))

    def _answered(self, answer: Answer, query: DirectoryQuery, fingerprint: str, timer: "IDelayedCall") -> None:
        if timer.active():
            timer.cancel()
        entries, truncated = answer
        result = interpret(query, entries, truncated)
        now = self.clock.seconds()
        if result.account is not None:
            self.positive.put(fingerprint, result, now)
            self._count("mapped")
        else:
            self.negative.put(fingerprint, result, now)
            self._count("no-account")
            self.log.info("directory: certificate {fp} maps to no account: {why}", fp=fingerprint[:16],
                          why=result.reason)
        self._finish(fingerprint, result)  # a late answer still fills the cache

    def _failed(self, failure: Failure, fingerprint: str, timer: "IDelayedCall") -> None:
        if timer.active():
            timer.cancel()
        if failure.check(DirectoryError):
            why = str(failure.value)
        else:
            self.log.failure("directory lookup failed unexpectedly", failure)
            why = f"{type(failure.value).__name__}: {failure.value}"
        if fingerprint in self._inflight:
            self._count("error")
            self.log.warn("directory lookup for certificate {fp} failed; refused: {why}", fp=fingerprint[:16],
                          why=why)
        self._finish(fingerprint, MappingResult(None, f"the directory cannot be asked: {why}"))

    def status(self) -> dict[str, Any]:
        """Facts for the admin/health view."""
        return {"queries": self.queries, "cached_accounts": len(self.positive), "cached_refusals": len(self.negative),
                "waiting": len(self._inflight)}


def describe_blocking(settings: Any, cert: x509.Certificate, der: bytes) -> tuple[list[str], MappingResult]:
    """For ``certgate trust map``: ask the directory now (blocking, no reactor, no cache).

    Returns the explanation lines and the result; a directory that cannot be asked gives
    a refusal naming why.
    """
    rules = rules_from(settings)
    query = build_query(cert, der, rules)
    if isinstance(query, MappingResult):
        return ["directory:        not asked", f"account:          none ({query.reason})"], query
    client = LdapClient(settings)
    try:
        entries, truncated = client.search(query)
    except DirectoryError as exc:
        result = MappingResult(None, f"the directory cannot be asked: {exc}")
        return [f"directory filter: {query.filter}", f"account:          none ({result.reason})"], result
    finally:
        client.close()
    result = interpret(query, entries, truncated)
    return describe_answer(query, entries, truncated, result), result
