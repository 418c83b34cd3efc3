"""Hot reload of the trust store and the server certificate, in memory (iosim, one Clock)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.task import Clock

from proxy.listener.context import TLSConfigError
from proxy.listener.reload import TrustState
from proxy.listener.tls import LiveServerTLS, revalidate
from tests.tls_support import I, ClientTLS, Conn, TlsPki, connect, make_config
from trust.store import TrustStoreError


@pytest.fixture
def pki(tmp_path: Path) -> TlsPki:
    return TlsPki(tmp_path / "pki")


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(I.utcnow().timestamp())
    return c


def setup(pki: TlsPki, clock: Clock, mode: str = "need", **kw: Any) -> tuple[TrustState, LiveServerTLS]:
    cfg = make_config(pki, client_auth=mode, **kw)
    state = TrustState(cfg, clock)
    return state, LiveServerTLS(state, cfg)


def live(conn: Conn) -> SimpleNamespace:
    """What the HTTP layer's protocol looks like to revalidate(): identity + transport."""
    return SimpleNamespace(identity=conn.identity, transport=conn.server_tls)


def test_ca_added_and_removed_takes_effect_on_next_handshake(pki: TlsPki, clock: Clock) -> None:
    state, creator = setup(pki, clock)
    alice = pki.client("alice")
    old = connect(creator, ClientTLS.presenting(pki, alice), clock)
    assert old.established
    first = state.current

    ca2 = I.ca("second CA")
    bob = I.client(ca2, "bob")
    assert not connect(creator, ClientTLS.presenting(pki, bob), clock).established
    (pki.store / "second.pem").write_bytes(ca2.cert_pem())  # what `certgate trust add` does (atomically)
    (pki.store / "ca.pem").unlink()                        # `certgate trust remove`
    new_bob = connect(creator, ClientTLS.presenting(pki, bob), clock)
    assert new_bob.established and new_bob.identity.account == "bob"
    assert state.current is not first and state.reload_count == 1 and state.healthy
    refused = connect(creator, ClientTLS.presenting(pki, alice), clock)
    assert not refused.established and not refused.server.handshake_done
    # the connection made before the reload keeps its context and keeps working
    assert old.roundtrip(b"still") == b"echo:still"
    assert old.server_tls.getHandle().get_context() is first.context


def test_revalidate_aborts_connections_whose_ca_was_removed(pki: TlsPki, clock: Clock) -> None:
    state, creator = setup(pki, clock, "want")
    ca2 = I.ca("second CA")
    (pki.store / "second.pem").write_bytes(ca2.cert_pem())
    alice = connect(creator, ClientTLS.presenting(pki, pki.client("alice")), clock)
    bob = connect(creator, ClientTLS.presenting(pki, I.client(ca2, "bob")), clock)
    anon = connect(creator, ClientTLS.presenting(pki, None), clock)
    bad = connect(creator, ClientTLS.presenting(pki, pki.expired()), clock)
    assert alice.identity.ok and bob.identity.ok and not anon.identity.presented and not bad.identity.ok
    seen: list[tuple[Any, Any]] = []
    closed: list[int] = []
    conns = [live(c) for c in (alice, bob, anon, bad)]
    state.add_listener(lambda old, new: seen.append((old, new)))
    state.add_listener(lambda old, new: closed.append(revalidate(conns, state, clock.seconds())))
    before = state.generation
    (pki.store / "second.pem").unlink()
    assert state.reload("SIGHUP") is True
    assert seen == [(before, state.generation)]
    assert closed == [1]
    bob.pump.flush()
    assert bob.server.lost_reason is not None and bob.client.lost_reason is not None
    assert alice.roundtrip(b"a") == b"echo:a"
    assert anon.roundtrip(b"n") == b"echo:n"
    assert bad.roundtrip(b"b") == b"echo:b"


def test_revalidate_after_crl_revocation(pki: TlsPki, clock: Clock) -> None:
    state, creator = setup(pki, clock, "need")
    carol = pki.client("carol")
    c = connect(creator, ClientTLS.presenting(pki, carol), clock)
    assert c.established
    (pki.store / "ca.crl").write_bytes(I.pem(I.crl(pki.ca, [carol.cert.serial_number])))
    assert state.maybe_reload() is True
    assert revalidate([live(c)], state, clock.seconds()) == 1
    c.pump.flush()
    assert c.server.lost_reason is not None
    assert not state.still_valid(I.der(carol.cert), (), clock.seconds())
    assert state.still_valid(I.der(pki.client("dan").cert), (), clock.seconds())


def test_broken_store_edit_keeps_old_state(pki: TlsPki, clock: Clock) -> None:
    logged: list[dict[str, Any]] = []
    cfg = make_config(pki)
    from twisted.logger import Logger

    state = TrustState(cfg, clock, log=Logger(observer=logged.append))
    creator = LiveServerTLS(state, cfg)
    alice = pki.client("alice")
    good = state.current
    (pki.store / "broken.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    for _ in range(3):
        c = connect(creator, ClientTLS.presenting(pki, alice), clock)
        assert c.established and c.identity.account == "alice"
    assert state.current is good
    assert state.healthy is False
    assert state.last_error is not None and "broken.pem" in state.last_error
    assert state.failed_reloads == 1  # one attempt per edit, not one per handshake
    errors = [e for e in logged if e.get("log_level") is not None and e["log_level"].name == "error"]
    assert errors and "broken.pem" in errors[0]["error"]
    (pki.store / "broken.pem").unlink()
    c = connect(creator, ClientTLS.presenting(pki, alice), clock)
    assert c.established and state.healthy and state.last_error is None
    assert state.current is not good


def test_broken_server_key_keeps_old_state_and_rotation_works(pki: TlsPki, clock: Clock) -> None:
    state, creator = setup(pki, clock)
    alice = pki.client("alice")
    old = connect(creator, ClientTLS.presenting(pki, alice), clock)
    first_leaf = pki.server.cert
    # a key that belongs to another certificate
    pki.server_key.write_bytes(I.client(pki.ca, "x").key_pem())
    c = connect(creator, ClientTLS.presenting(pki, alice), clock)
    assert c.established
    assert not state.healthy and str(pki.server_key) in (state.last_error or "")
    assert "does not belong" in (state.last_error or "")
    # rotate properly: new certificate and key
    new = I.server(pki.ca, ("localhost",))
    new.write(pki.folder, "server")
    cl = ClientTLS.presenting(pki, alice)
    c2 = connect(creator, cl, clock)
    assert c2.established and state.healthy
    assert cl.connections[-1].get_peer_certificate(as_cryptography=True) == new.cert != first_leaf
    assert old.roundtrip(b"old") == b"echo:old"


def test_start_fails_loudly(pki: TlsPki, clock: Clock) -> None:
    (pki.store / "bad.crt").write_bytes(b"garbage")
    with pytest.raises(TrustStoreError) as e:
        TrustState(make_config(pki), clock)
    assert "bad.crt" in str(e.value)
    (pki.store / "bad.crt").unlink()
    pki.server_key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(TLSConfigError) as e2:
        TrustState(make_config(pki), clock)
    assert str(pki.server_key) in str(e2.value)


def test_maybe_reload_is_a_no_op_without_changes(pki: TlsPki, clock: Clock) -> None:
    state, creator = setup(pki, clock)
    snap = state.current
    for _ in range(5):
        assert state.maybe_reload() is False
        connect(creator, ClientTLS.presenting(pki, pki.client("alice")), clock)
    assert state.current is snap and state.reload_count == 0


def test_reload_rebuilds_context_and_listener_errors_do_not_break_it(pki: TlsPki, clock: Clock) -> None:
    state, _ = setup(pki, clock)
    first = state.current

    def boom(old: Any, new: Any) -> None:
        raise RuntimeError("listener bug")

    state.add_listener(boom)
    assert state.reload("SIGHUP") is True
    assert state.current is not first and state.current.context is not first.context
    assert state.healthy and state.reload_count == 1
    assert state.status()["reload_count"] == 1 and state.status()["healthy"] is True


def test_client_ca_list_follows_reload(pki: TlsPki, clock: Clock) -> None:
    state, creator = setup(pki, clock, "want")
    ca2 = I.ca("added later")
    (pki.store / "later.pem").write_bytes(ca2.cert_pem())
    cl = ClientTLS.presenting(pki, None)
    connect(creator, cl, clock)
    names = {n.der() for n in cl.connections[-1].get_client_ca_list()}
    assert ca2.cert.subject.public_bytes() in names and pki.ca.cert.subject.public_bytes() in names


def test_sni_certificates(pki: TlsPki, clock: Clock) -> None:
    other = I.server(pki.ca, ("other.example",))
    cert_path, key_path = other.write(pki.folder, "other")
    wild = I.server(pki.ca, ("*.wild.example",))
    wcert, wkey = wild.write(pki.folder, "wild")
    state, creator = setup(pki, clock, "need", sni=[f"other.example={cert_path}:{key_path}",
                                                     f"*.wild.example={wcert}:{wkey}"])
    alice = pki.client("alice")
    for name, expected in (("other.example", other.cert), ("a.wild.example", wild.cert),
                           ("localhost", pki.server.cert), (None, pki.server.cert)):
        cl = ClientTLS.presenting(pki, alice, server_name=name)
        c = connect(creator, cl, clock)
        assert c.established and c.identity.server_name == name
        assert cl.connections[-1].get_peer_certificate(as_cryptography=True) == expected, name
    # client authentication is the same on an SNI context
    c = connect(creator, ClientTLS.presenting(pki, pki.expired(), server_name="other.example"), clock)
    assert not c.established and state.current.verifier.refused == 1


def test_sni_entry_errors(pki: TlsPki, clock: Clock) -> None:
    with pytest.raises(TLSConfigError) as e:
        setup(pki, clock, sni=["no-files-here"])
    assert "NAME=CERT.pem:KEY.pem" in str(e.value)
    with pytest.raises(TLSConfigError) as e2:
        setup(pki, clock, sni=[f"x.example={pki.folder / 'missing.pem'}:{pki.server_key}"])
    assert "missing.pem" in str(e2.value) and "cannot read" in str(e2.value)


def test_in_place_edit_is_caught_by_the_timer_check(pki: TlsPki, clock: Clock) -> None:
    """The per-handshake check watches folder entries; rewriting a file in place needs maybe_reload."""
    state, creator = setup(pki, clock)
    other = I.ca("replacement CA")
    snap = state.current
    import os

    st = os.stat(pki.store)
    (pki.store / "ca.pem").write_bytes(other.cert_pem())  # same name, same folder entry
    os.utime(pki.store, ns=(st.st_atime_ns, st.st_mtime_ns))  # as on a file system that did not touch it
    state.quick_check()
    assert state.current is snap
    assert state.maybe_reload() is True  # what the [trust] reload_interval timer calls
    bob = I.client(other, "bob")
    assert connect(creator, ClientTLS.presenting(pki, bob), clock).established
    assert not connect(creator, ClientTLS.presenting(pki, pki.client("alice")), clock).established
