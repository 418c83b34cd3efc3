"""proxy.listener.directory.DirectoryMapper on a Clock, and how a lookup gates a TLS connection.

The blocking search is replaced by a function whose answers the test controls; the real
ldap3 client against a real slapd is in tests/blackbox/test_directory_gateway.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from proxy.config import LdapSection, default_values
from proxy.listener.directory import DirectoryMapper
from proxy.listener.identity import ConnectionIdentity
from proxy.listener.ldap_client import DirectoryError
from proxy.listener.reload import TrustState
from proxy.listener.tls import LiveServerTLS
from tests.tls_support import I, ClientTLS, TlsPki, connect, make_config
from trust import certinfo
from trust.directory import DirectoryEntry
from trust.presented import PresentedCertificate


def _settings(**kw: Any) -> LdapSection:
    values = default_values("ldap")
    values.update(url="ldaps://127.0.0.1:1", base_dn="dc=x", styles=["upn"], timeout=2.0)
    values.update(kw)
    return LdapSection(**values)


class FakeDirectory:
    """Stands for the thread pool + search: records queries, answers when told."""

    def __init__(self) -> None:
        self.queries: list[Any] = []
        self.pending: list[Deferred[Any]] = []

    def in_thread(self, fn: Any, query: Any) -> Deferred[Any]:
        self.queries.append(query)
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d

    def answer(self, *entries: DirectoryEntry) -> None:
        self.pending.pop(0).callback((list(entries), False))

    def fail(self, why: str) -> None:
        self.pending.pop(0).errback(DirectoryError(why))


def _entry(upn: str, uid: str) -> DirectoryEntry:
    return DirectoryEntry(f"uid={uid},dc=x", {"userprincipalname": [upn.encode()], "uid": [uid.encode()]})


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(I.utcnow().timestamp())
    return c


CA = I.ca("mapper CA")


def _mapper(clock: Clock, fake: FakeDirectory, **kw: Any) -> DirectoryMapper:
    return DirectoryMapper(_settings(**kw), clock=clock, reactor=clock, search=lambda q: None,
                           in_thread=fake.in_thread)


def _resolve(m: DirectoryMapper, cert: I.Issued) -> list[Any]:
    out: list[Any] = []
    m.resolve(PresentedCertificate.parse(I.der(cert.cert))).addCallback(out.append)
    return out


def test_answer_is_cached_and_a_hit_does_not_query(clock: Clock) -> None:
    fake = FakeDirectory()
    m = _mapper(clock, fake, cache_ttl=60.0)
    carol = I.client(CA, "Carol", upns=["carol@x.test"])
    first = _resolve(m, carol)
    assert first == [] and len(fake.queries) == 1
    assert fake.queries[0].filter == "(userPrincipalName=carol@x.test)"
    fake.answer(_entry("carol@x.test", "carol"))
    assert first[0].account == "carol"
    clock.advance(59)
    assert _resolve(m, carol)[0].account == "carol" and len(fake.queries) == 1  # cached: not asked
    assert m.peek(carol.fingerprint).account == "carol"  # type: ignore[union-attr]
    clock.advance(2)
    assert m.peek(carol.fingerprint) is None
    _resolve(m, carol)
    assert len(fake.queries) == 2  # the TTL passed: asked again


def test_timeout_fails_closed_on_the_clock_and_failures_are_not_cached(clock: Clock) -> None:
    fake = FakeDirectory()
    m = _mapper(clock, fake, timeout=2.0)
    dave = I.client(CA, "Dave", upns=["dave@x.test"])
    out = _resolve(m, dave)
    clock.advance(1.99)
    assert out == []
    clock.advance(0.02)
    assert out[0].account is None and "did not answer within 2 s" in out[0].reason
    assert m.peek(dave.fingerprint) is None  # not cached
    fake.answer(_entry("dave@x.test", "dave"))  # a late answer still fills the cache
    assert m.peek(dave.fingerprint).account == "dave"  # type: ignore[union-attr]
    m.positive.clear()
    out = _resolve(m, dave)
    fake.fail("bind to ldaps://127.0.0.1:1 as (anonymous) failed: invalidCredentials (49)")
    assert out[0].account is None and "invalidCredentials" in out[0].reason
    assert m.peek(dave.fingerprint) is None
    assert not clock.getDelayedCalls()  # no timer left behind


def test_negative_answers_are_cached_briefly_and_bounded(clock: Clock) -> None:
    fake = FakeDirectory()
    m = _mapper(clock, fake, negative_cache_ttl=5.0, negative_cache_size=2)
    certs = [I.client(CA, f"u{i}", upns=[f"u{i}@x.test"]) for i in range(3)]
    for c in certs:
        _resolve(m, c)
        fake.answer()  # no entry
    assert len(m.negative) == 2  # bounded: the oldest was dropped
    assert m.peek(certs[0].fingerprint) is None
    hit = m.peek(certs[2].fingerprint)
    assert hit is not None and hit.account is None and "no directory entry" in str(hit.reason)
    clock.advance(5)
    assert m.peek(certs[2].fingerprint) is None


def test_concurrent_lookups_share_one_search_and_the_queue_is_bounded(clock: Clock) -> None:
    fake = FakeDirectory()
    m = _mapper(clock, fake, pool_size=1)
    erin = I.client(CA, "Erin", upns=["erin@x.test"])
    a, b = _resolve(m, erin), _resolve(m, erin)
    assert len(fake.queries) == 1
    fake.answer(_entry("erin@x.test", "erin"))
    assert a[0].account == b[0].account == "erin"
    many = [I.client(CA, f"m{i}", upns=[f"m{i}@x.test"]) for i in range(m.max_waiting + 1)]
    results = [_resolve(m, c) for c in many]
    assert len(fake.queries) == 1 + m.max_waiting
    assert "busy" in results[-1][0].reason


def test_a_certificate_no_style_applies_to_is_refused_without_asking(clock: Clock) -> None:
    fake = FakeDirectory()
    m = _mapper(clock, fake)
    out = _resolve(m, I.client(CA, "NoUpn"))
    assert out[0].account is None and not fake.queries


# --------------------------------------------------------------------------- gating a connection


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return TlsPki(tmp_path_factory.mktemp("dirpki"))


def _listener(pki: TlsPki, clock: Clock, mode: str, fake: FakeDirectory) -> tuple[TrustState, LiveServerTLS]:
    cfg = make_config(pki, client_auth=mode,
                      trust="mapping = ldap\n[ldap]\nurl = ldaps://127.0.0.1:1\nbase_dn = dc=x\nstyles = upn\ntimeout = 2\n")
    mapper = DirectoryMapper(cfg.ldap, clock=clock, reactor=clock, search=lambda q: None, in_thread=fake.in_thread)
    state = TrustState(cfg, clock, directory=mapper)
    return state, LiveServerTLS(state, cfg)


@pytest.mark.parametrize("mode", ["need", "want"])
def test_uncached_account_is_known_only_after_the_directory_answered(pki: TlsPki, clock: Clock, mode: str) -> None:
    fake = FakeDirectory()
    _, creator = _listener(pki, clock, mode, fake)
    carol = pki.client("Carol", upns=["carol@x.test"])
    conn = connect(creator, ClientTLS.presenting(pki, carol), clock)  # type: ignore[arg-type]
    pending = conn.identity
    assert isinstance(pending, Deferred) and conn.client.handshake_done
    got: list[Any] = []
    pending.addCallback(got.append)
    assert got == []  # nothing is decided before the directory answers
    fake.answer(_entry("carol@x.test", "carol"))
    ident = got[0]
    assert isinstance(ident, ConnectionIdentity) and ident.ok and ident.account == "carol"
    assert ident.fingerprint == certinfo.fingerprint(carol.cert)
    # The next connection uses the cache: decided inside the handshake, no query.
    again = connect(creator, ClientTLS.presenting(pki, carol), clock)  # type: ignore[arg-type]
    assert isinstance(again.identity, ConnectionIdentity) and again.identity.account == "carol"
    assert len(fake.queries) == 1


def test_no_account_closes_in_need_mode_and_explains_in_want_mode(pki: TlsPki, clock: Clock) -> None:
    fake = FakeDirectory()
    _, creator = _listener(pki, clock, "need", fake)
    eve = pki.client("Eve", upns=["eve@x.test"])
    conn = connect(creator, ClientTLS.presenting(pki, eve), clock)  # type: ignore[arg-type]
    got: list[Any] = []
    conn.identity.addCallback(got.append)  # type: ignore[union-attr]
    fake.answer()
    assert got == [None]  # the HTTP layer aborts on None
    # Now cached as "no account": refused inside the handshake with an alert.
    again = connect(creator, ClientTLS.presenting(pki, eve), clock)  # type: ignore[arg-type]
    assert not again.established and again.client.lost_reason is not None

    fake_w = FakeDirectory()
    _, creator_w = _listener(pki, clock, "want", fake_w)
    conn = connect(creator_w, ClientTLS.presenting(pki, eve), clock)  # type: ignore[arg-type]
    got = []
    conn.identity.addCallback(got.append)  # type: ignore[union-attr]
    clock.advance(2.5)  # the directory never answers: timeout
    ident = got[0]
    assert ident.presented and ident.account is None and "did not answer within 2 s" in ident.invalid_reason


def test_reference_settings_parse_and_problems_are_named(tmp_path: Path) -> None:
    from proxy.config import ConfigError, parse_config

    (tmp_path / "s.pem").write_text("x")
    (tmp_path / "s.key").write_text("x")
    base = "[listen]\ncertificate = s.pem\nkey = s.key\n[trust]\nstore = t\nmapping = ldap\n[upstream]\nurl = http://h:1\n"
    with pytest.raises(ConfigError) as ei:
        parse_config(base + "[ldap]\nurl = ldap://dc.example\nbind_dn = cn=x\nstyles = upn, kerberos\n"
                            "filter = objectClass=person\naccount_attribute = u id\n", tmp_path / "c.conf")
    msgs = "\n".join(str(p) for p in ei.value.problems)
    for expected in ("[ldap] starttls: ldap:// needs starttls = yes", "[ldap] base_dn: is required",
                     "[ldap] bind_password_file: is required with bind_dn", "[ldap] styles: kerberos",
                     "[ldap] filter:", "[ldap] account_attribute:"):
        assert expected in msgs, msgs
    (tmp_path / "pw").write_text("secret\n")
    cfg = parse_config(base + "[ldap]\nurl = ldaps://dc.example\nbase_dn = dc=example\nbind_dn = cn=x\n"
                              "bind_password_file = pw\n", tmp_path / "c.conf")
    assert cfg.ldap.bind_password_file == tmp_path.resolve() / "pw" and cfg.trust.mapping.rule == "ldap"
