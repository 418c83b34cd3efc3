"""LoginService: factors, receipts, TOTP replay, throttling, audit (AUTH-04..AUTH-08)."""

import json

import pyotp
import pytest

from proxy.login.endpoints import login_endpoints
from proxy.login.testing import make_rig as _make_rig
from tests.reactor_thread import Blocking, resolve


def make_rig(*a, store=None, **kw):
    """The login rig with blocking views (the memory store's Deferreds have fired when returned)."""
    r = _make_rig(*a, store=store.store if isinstance(store, Blocking) else store, **kw)
    r.login, r.store, r.sessions = Blocking(r.login), Blocking(r.store), Blocking(r.sessions)
    return r


def SQLiteStore(path):  # noqa: N802  (the SQLite engine, run at once: these tests drive a fake clock)
    from proxy.stores.asynchronous import ImmediateStore
    from proxy.stores.sqlite import SQLiteEngine

    return Blocking(ImmediateStore(SQLiteEngine(path), "sqlite store"))
from proxy.login.totp import TotpSecrets

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture
def rig(tmp_path):
    r = make_rig(tmp_path)
    r.set_password("alice", "alice-pw")
    r.set_password("bob", "bob-pw")
    return r


def enroll(rig, account="alice"):
    TotpSecrets(rig.folder / "totp", rig.folder / "totp.key").store(account, SECRET, 0)


def code(rig, offset=0.0):
    return pyotp.TOTP(SECRET).at(rig.clock.seconds() + offset)


def test_single_step_password_opens_session(rig):
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw")
    assert o.ok and o.reason == "ok" and o.proven == {"tls-cert", "password"}
    assert o.session.account == "alice" and o.set_cookie[0][0] == b"Set-Cookie"
    assert o.session_expires_at == rig.clock.seconds() + 300
    rec = rig.audit.records[-1]
    assert rec["event"] == "login" and rec["decision"] == "allow" and rec["account"] == "alice"
    assert rec["fingerprint"] and rec["client_ip"] == "127.0.0.1"


def test_rules_default_and_per_account(tmp_path):
    r = make_rig(tmp_path, {"required_auth_methods": [["tls-cert", "password"]]},
                 account_rules={"carol": [["tls-cert"]], "dave": [["tls-cert", "totp"]]})
    assert r.login.required_methods("alice") == [["tls-cert", "password"]]
    assert r.login.required_methods("carol") == [["tls-cert"]]
    o = r.login.authenticate(account="carol", conn=r.conn("carol"))
    assert o.ok and o.proven == {"tls-cert"}
    # dave needs TOTP but is not enrolled: no rule applies, he cannot log in
    o = r.login.authenticate(account="dave", conn=r.conn("dave"))
    assert not o.ok and o.reason == "no-usable-rule" and o.receipt is None


def test_needs_totp_follows_enrolment(rig):
    assert not rig.login.needs_totp("alice")
    enroll(rig)
    assert rig.login.needs_totp("alice") and not rig.login.needs_totp("bob")


# ---------------------------------------------------------------- certificate (AUTH-07/08)

def test_cn_mismatch_refused_before_password(rig, monkeypatch):
    called = []
    monkeypatch.setattr(rig.login.passwords, "verify", lambda *a: called.append(a) or True)
    o = rig.login.authenticate(account="bob", conn=rig.conn("alice"), password="bob-pw")
    assert not o.ok and o.reason == "cn-mismatch" and not called
    assert "certificate" in o.public_message


@pytest.mark.parametrize("kw,reason", [({"presented": False}, "no-certificate"),
                                       ({"ok": False}, "certificate-invalid")])
def test_no_or_invalid_certificate(rig, kw, reason):
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice", **kw), password="alice-pw")
    assert not o.ok and o.reason == reason and o.session is None


def test_account_match_is_exact(rig):
    for typed in ("Alice", "alice ", "alice@corp", "ａｌｉｃｅ"):
        assert rig.login.authenticate(account=typed, conn=rig.conn("alice"), password="alice-pw").reason == "cn-mismatch"


def test_strip_domain_uses_the_mapped_account(tmp_path):
    import dataclasses

    r = make_rig(tmp_path)
    r.set_password("alice", "pw")
    mapping = type("Mapping", (), {"strip_domain": True})()
    cfg = dataclasses.replace(r.login.config, trust=type("Trust", (), {"mapping": mapping})())
    from proxy.login.service import LoginService

    svc = Blocking(LoginService(config=cfg, store=r.store.store, sessions=r.sessions.store, clock=r.clock,
                                audit=r.audit))
    o = svc.authenticate(account="alice@corp.example", conn=r.conn("alice"), password="pw")
    assert o.ok and o.account == "alice" and o.session.account == "alice"
    assert r.login.authenticate(account="alice@corp.example", conn=r.conn("alice"), password="pw").reason == "cn-mismatch"
    # the canonical account's lock cannot be dodged by varying the domain part
    for i in range(5):
        svc.authenticate(account=f"alice@d{i}.example", conn=r.conn("alice", cert=f"c{i}".encode(),
                                                                     client_ip=f"10.9.0.{i}"), password="x")
    o = svc.authenticate(account="alice@other.example", conn=r.conn("alice", cert=b"c9", client_ip="10.9.0.9"),
                         password="pw")
    assert o.reason == "throttled"


# ---------------------------------------------------------------- uniform failures (AUTH-04)

def test_uniform_failures(rig):
    wrong = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="nope")
    unknown = rig.login.authenticate(account="zed", conn=rig.conn("zed"), password="nope")
    assert wrong.reason == unknown.reason == "bad-password"
    assert wrong.public_message == unknown.public_message
    assert wrong.required == unknown.required == [] and wrong.receipt is None


def test_audit_never_holds_secrets(rig):
    enroll(rig)
    c = code(rig)
    rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", totp=c)
    rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="wrong-pw", totp="135792")
    rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw")  # partial: a receipt
    text = json.dumps(rig.audit.records)
    assert "alice-pw" not in text and "wrong-pw" not in text and "cgr1." not in text
    values = [v for rec in rig.audit.records for v in rec.values()]
    assert c not in values and "135792" not in values
    assert not any(k in ("password", "totp", "code", "receipt") for rec in rig.audit.records for k in rec)


# ---------------------------------------------------------------- throttling (AUTH-04)

def test_lockout_per_account_refuses_even_the_right_password(rig):
    for _ in range(5):
        rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="x")
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw")
    assert o.reason == "throttled" and o.retry_after == 900 and o.session is None
    rig.clock.advance(901)
    assert rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw").ok


def test_distributed_over_certificates_and_ips_still_locks_the_account(rig):
    # five different certificates for alice, five different IPs: the account counter still trips
    for i in range(5):
        c = rig.conn("alice", cert=f"alice-card-{i}".encode(), client_ip=f"10.0.0.{i}")
        assert rig.login.authenticate(account="alice", conn=c, password="guess").reason == "bad-password"
    c = rig.conn("alice", cert=b"alice-card-9", client_ip="10.0.0.9")
    assert rig.login.authenticate(account="alice", conn=c, password="alice-pw").reason == "throttled"


def test_one_ip_across_accounts_is_locked(rig):
    for acct in ("u1", "u2", "u3", "u4", "u5"):
        rig.login.authenticate(account=acct, conn=rig.conn(acct, client_ip="192.0.2.7"), password="x")
    o = rig.login.authenticate(account="bob", conn=rig.conn("bob", client_ip="192.0.2.7"), password="bob-pw")
    assert o.reason == "throttled"
    assert rig.login.authenticate(account="bob", conn=rig.conn("bob", client_ip="192.0.2.8"), password="bob-pw").ok


def test_cn_mismatch_does_not_lock_the_victim_account(rig):
    for i in range(6):
        rig.login.authenticate(account="bob", conn=rig.conn("mallory", client_ip=f"10.1.0.{i}"), password="x")
    assert rig.login.authenticate(account="bob", conn=rig.conn("bob"), password="bob-pw").ok


def test_counters_survive_restart_with_sqlite(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    r = make_rig(tmp_path, store=store)
    r.set_password("alice", "pw")
    for _ in range(5):
        r.login.authenticate(account="alice", conn=r.conn("alice"), password="x")
    store.close()
    store2 = SQLiteStore(tmp_path / "s.db")
    r2 = make_rig(tmp_path, store=store2, clock=r.clock)
    assert r2.login.authenticate(account="alice", conn=r2.conn("alice"), password="pw").reason == "throttled"
    store2.close()


# ---------------------------------------------------------------- TOTP (AUTH-05)

def test_password_and_totp_single_step(rig):
    enroll(rig)
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", totp=code(rig))
    assert o.ok and o.proven == {"tls-cert", "password", "totp"}


def test_totp_replay_same_step_refused(rig):
    enroll(rig)
    c = code(rig)
    assert rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", totp=c).ok
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", totp=c)
    assert o.reason == "totp-replay" and not o.ok
    # the full-width spelling of the same code is refused before pyotp
    full = "".join(chr(ord(ch) - 48 + 0xFF10) for ch in c)
    assert rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw",
                                  totp=full).reason == "bad-totp"
    # a later step is fine
    rig.clock.advance(30)
    assert rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", totp=code(rig)).ok


def test_totp_previous_step_after_newer_is_refused(rig):
    enroll(rig)
    newer = code(rig, +30)
    older = code(rig)
    assert rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", totp=newer).ok
    assert rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw",
                                  totp=older).reason == "totp-replay"


@pytest.mark.parametrize("mangle", [lambda c: " " + c, lambda c: c + " ", lambda c: c[:5], lambda c: c + "1",
                                    lambda c: "".join(chr(ord(x) - 48 + 0xFF10) for x in c)])
def test_totp_bad_syntax(rig, mangle):
    enroll(rig)
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", totp=mangle(code(rig)))
    assert o.reason == "bad-totp"


def test_totp_step_plus_two_refused(rig):
    enroll(rig)
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", totp=code(rig, 60))
    assert o.reason == "bad-totp"


def test_totp_replay_across_restart(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    r = make_rig(tmp_path, store=store)
    r.set_password("alice", "pw")
    enroll(r)
    c = code(r)
    assert r.login.authenticate(account="alice", conn=r.conn("alice"), password="pw", totp=c).ok
    store.close()
    store2 = SQLiteStore(tmp_path / "s.db")
    r2 = make_rig(tmp_path, store=store2, clock=r.clock)
    assert r2.login.authenticate(account="alice", conn=r2.conn("alice"), password="pw", totp=c).reason == "totp-replay"
    store2.close()


def test_undecryptable_secret_fails_closed(rig):
    enroll(rig)
    (rig.folder / "totp.key").write_text("Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=\n")
    assert rig.login.needs_totp("alice")  # still required
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw")
    assert not o.ok and o.receipt is not None  # password alone is only a partial success
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", totp=code(rig))
    assert not o.ok and o.reason == "totp-unavailable"


def test_unreadable_secrets_file_keeps_totp_required(rig):
    enroll(rig)
    (rig.folder / "totp").write_bytes(b"\xff\xfe garbage")
    assert rig.login.needs_totp("alice")
    assert not rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw").ok


# ---------------------------------------------------------------- receipts (AUTH-06) and skipping (AUTH-07)

def step1(rig, account="alice", password="alice-pw", **kw):
    enroll(rig, account)
    o = rig.login.authenticate(account=account, conn=rig.conn(account, **kw), password=password)
    assert not o.ok and o.receipt and o.proven == {"tls-cert", "password"}
    assert o.required == [["tls-cert", "password", "totp"]]
    return o


def test_multi_step(rig):
    o = step1(rig)
    o2 = rig.login.authenticate(account="alice", conn=rig.conn("alice"), totp=code(rig), receipt=o.receipt)
    assert o2.ok and o2.proven == {"tls-cert", "password", "totp"}


def test_enrolled_user_posting_password_only_gets_required_methods(rig):
    o = step1(rig)
    assert o.reason == "more-methods-required" and o.session is None and not o.set_cookie


def test_totp_alone_without_receipt_is_not_enough(rig):
    enroll(rig)
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), totp=code(rig))
    assert not o.ok and o.proven == {"tls-cert", "totp"} and o.receipt


def test_receipt_reused(rig):
    o = step1(rig)
    assert rig.login.authenticate(account="alice", conn=rig.conn("alice"), totp=code(rig), receipt=o.receipt).ok
    rig.clock.advance(30)
    o3 = rig.login.authenticate(account="alice", conn=rig.conn("alice"), totp=code(rig), receipt=o.receipt)
    assert o3.reason == "receipt-invalid" and rig.audit.records[-1]["detail"] == "receipt-reused"


def test_receipt_for_other_user(rig):
    o = step1(rig, "alice")
    enroll(rig, "bob")
    o2 = rig.login.authenticate(account="bob", conn=rig.conn("bob"), totp=code(rig), receipt=o.receipt)
    assert o2.reason == "receipt-invalid" and rig.audit.records[-1]["detail"] == "receipt-other-account"
    # ... and with bob's password it still proves nothing of alice's
    o3 = rig.login.authenticate(account="bob", conn=rig.conn("bob"), password="bob-pw", receipt=o.receipt)
    assert not o3.ok


def test_receipt_from_other_certificate(rig):
    o = step1(rig, cert=b"alice-card-1")
    o2 = rig.login.authenticate(account="alice", conn=rig.conn("alice", cert=b"alice-card-2"), totp=code(rig),
                                receipt=o.receipt)
    assert o2.reason == "receipt-invalid" and rig.audit.records[-1]["detail"] == "receipt-other-certificate"


def test_receipt_expired(rig):
    o = step1(rig)
    rig.clock.advance(300)
    o2 = rig.login.authenticate(account="alice", conn=rig.conn("alice"), totp=code(rig), receipt=o.receipt)
    assert o2.reason == "receipt-invalid" and rig.audit.records[-1]["detail"] == "receipt-expired"


def test_receipt_tampered(rig):
    o = step1(rig)
    bad = o.receipt[:-3] + ("AAA" if o.receipt[-3:] != "AAA" else "BBB")
    o2 = rig.login.authenticate(account="alice", conn=rig.conn("alice"), totp=code(rig), receipt=bad)
    assert o2.reason == "receipt-invalid"


def test_receipt_without_certificate_on_current_connection(rig):
    """AUTH-08: the step after the card was pulled (no certificate on this connection) fails."""
    o = step1(rig)
    o2 = rig.login.authenticate(account="alice", conn=rig.conn("alice", presented=False), totp=code(rig),
                                receipt=o.receipt)
    assert o2.reason == "no-certificate"


def test_chained_receipts_keep_the_first_expiry(rig):
    enroll(rig)
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"))
    first_exp = o.receipt_expires_at
    rig.clock.advance(200)
    o2 = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", receipt=o.receipt)
    assert o2.receipt and o2.receipt_expires_at == first_exp


# ---------------------------------------------------------------- password = upstream

def test_upstream_mode(tmp_path):
    r = make_rig(tmp_path, {"password": "upstream", "password_file": None})
    o = r.login.authenticate(account="alice", conn=r.conn("alice"), password="anything")
    assert o.reason == "password-not-checkable"
    o = r.login.authenticate(account="alice", conn=r.conn("alice"), password_proven_upstream=True)
    assert o.ok and o.proven == {"tls-cert", "password"}


def test_upstream_flag_ignored_in_file_mode(rig):
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password_proven_upstream=True)
    assert not o.ok and o.reason == "password-not-upstream"


def test_pending_slot(tmp_path):
    """MaxStartups slots live in the store: a second login process (same store) sees the first's slot."""
    from proxy.login.service import LoginService

    r = make_rig(tmp_path, {"max_startups": (1, 100, 1)})
    other = LoginService(config=r.login.config, store=r.store.store, sessions=r.sessions.store, clock=r.clock,
                         audit=r.audit)
    slot = resolve(r.login.startups.try_acquire())
    assert slot
    assert resolve(other.startups.try_acquire()) is None  # refused: the one slot is taken elsewhere
    resolve(r.login.startups.release(slot))
    again = resolve(other.startups.try_acquire())
    assert again
    resolve(other.startups.release(again))
    # a slot never released (a crashed process) expires after [login] timeout
    assert resolve(r.login.startups.try_acquire())
    assert resolve(other.startups.try_acquire()) is None
    r.clock.advance(float(r.login.config.login.timeout))
    assert resolve(other.startups.try_acquire())


def test_no_http_route_changes_secrets(rig):
    """AUTH-08: password change and TOTP enrol/reset are host-only (CLI); HTTP offers only login."""
    assert set(login_endpoints(rig.login)) == {"/.certgate/login", "/.certgate/api/auth"}


def test_session_does_not_replace_certificate_at_login(rig):
    """AUTH-08: having a session is no proof; each login step needs the certificate on its connection."""
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw")
    assert o.ok
    o2 = rig.login.authenticate(account="alice", conn=rig.conn("alice", presented=False), password="alice-pw")
    assert not o2.ok and o2.reason == "no-certificate" and o2.session is None


def test_a_totp_step_that_cannot_be_recorded_is_refused_never_accepted(rig):
    """Replay protection never opens: the store fails exactly when the step must be recorded."""
    from twisted.internet.defer import fail

    from proxy.stores.interface import StoreError

    enroll(rig)
    raw = rig.store.store
    real = raw.use_totp_step
    raw.use_totp_step = lambda account, step: fail(StoreError("redis store redis://10.0.0.5:6379/0: not connected"))
    c = code(rig)
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", totp=c)
    assert not o.ok and o.reason == "session-store-unavailable" and o.retry_after == 2
    assert o.session is None and not o.set_cookie and rig.store.list() == []
    assert rig.audit.records[-1]["reason"] == "session-store-unavailable"
    raw.use_totp_step = real  # the store is back: the same code is accepted once, then never again
    assert rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw", totp=c).ok
    assert rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="alice-pw",
                                  totp=c).reason == "totp-replay"


def test_session_limit_refuses_the_login_with_its_own_reason(tmp_path):
    from proxy.stores.testing import make_config

    r = make_rig(tmp_path, {"required_auth_methods": [["tls-cert", "password"]]})
    r.sessions.store.settings = make_config({"sessions": {"max_per_account": 1}}).sessions
    r.set_password("alice", "pw")
    assert r.login.authenticate(account="alice", conn=r.conn("alice"), password="pw").ok
    o = r.login.authenticate(account="alice", conn=r.conn("alice"), password="pw")
    assert not o.ok and o.reason == "session-limit" and "maximum number of sessions" in o.public_message
    assert len([x for x in r.store.list() if x.ended is None]) == 1
