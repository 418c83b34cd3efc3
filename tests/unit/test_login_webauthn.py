"""The webauthn factor through LoginService: registration, login, and every refusal with its
audit line (a software authenticator with real keys: tests/unit/webauthn_soft.py)."""

from __future__ import annotations

import io
import json

import pytest

from proxy.config import ConfigError, parse_config
from proxy.login import factors
from proxy.login.api import outcome_response, parse_body
from proxy.login.testing import make_rig as _make_rig
from proxy.login.webauthn import WebAuthnError
from proxy.login.webauthn_creds import CredentialFile
from tests.reactor_thread import resolve
from tests.unit.webauthn_soft import SoftKey


class Sync:
    """A view of the login service (and its ``webauthn`` factor) whose methods return the results
    of their Deferreds, which have fired already on the memory store."""

    def __init__(self, obj):
        self._obj = obj

    def __getattr__(self, name):
        attr = getattr(self._obj, name)
        if name == "webauthn" and attr is not None:
            return Sync(attr)
        if callable(attr):
            return lambda *a, **kw: resolve(attr(*a, **kw))
        return attr


def make_rig(*a, **kw):
    r = _make_rig(*a, **kw)
    r.login = Sync(r.login)
    return r

ORIGIN = "https://console.example.org"
RULES = [["tls-cert", "password", "webauthn"], ["tls-cert", "password"]]


@pytest.fixture
def rig(tmp_path):
    r = make_rig(tmp_path, {"required_auth_methods": RULES},
                 webauthn={"rp_id": "console.example.org", "origin": ORIGIN, "credentials": tmp_path / "wa.json",
                           "challenge_lifetime": 60.0}, account_uv={"bob": "required"})
    r.set_password("alice", "pw")
    r.set_password("bob", "pw")
    return r


def who(rig, account):
    c = rig.conn(account)
    return {"fingerprint": c.identity.fingerprint, "client_ip": c.identity.client_ip}


def register(rig, account, key=None, name="blue key"):
    key = key or SoftKey("console.example.org")
    conn = rig.conn(account)
    opts = rig.login.webauthn.registration_options(account, conn.identity.fingerprint, rig.clock.seconds())
    rig.login.webauthn.register(account, conn.identity.fingerprint, key.register(opts, ORIGIN), name,
                                rig.clock.seconds(), who(rig, account))
    return key


def password_step(rig, account):
    o = rig.login.authenticate(account=account, conn=rig.conn(account), password="pw")
    assert o.partial and o.webauthn_options is not None, o
    return o


def key_step(rig, account, o, response):
    return rig.login.authenticate(account=account, conn=rig.conn(account), receipt=o.receipt, webauthn=response)


def reasons(rig, event="login"):
    return [r["reason"] for r in rig.audit.records if r["event"] == event]


def test_without_a_key_the_password_suffices_with_one_the_key_is_needed(rig):
    assert rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="pw").ok
    register(rig, "alice")
    assert rig.audit.records[-1]["event"] == "webauthn" and rig.audit.records[-1]["decision"] == "add"
    assert rig.login.effective_rules("alice") == [["tls-cert", "password", "webauthn"]]
    assert rig.login.needs_webauthn("alice") and not rig.login.needs_webauthn("bob")
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="pw")
    assert not o.ok and o.partial and factors.missing(o.required, o.proven) == ["webauthn"]


def test_login_with_the_key_stores_counter_and_last_use(rig):
    key = register(rig, "alice")
    o = password_step(rig, "alice")
    assert o.webauthn_options["rpId"] == "console.example.org"
    assert [c["id"] for c in o.webauthn_options["allowCredentials"]] == [CredentialFile(rig.folder / "wa.json")
                                                                        .credentials("alice")[0].id]
    rig.clock.advance(5)
    done = key_step(rig, "alice", o, key.assert_(o.webauthn_options, ORIGIN))
    assert done.ok and done.proven == {"tls-cert", "password", "webauthn"}
    c = CredentialFile(rig.folder / "wa.json").credentials("alice")[0]
    assert c.sign_count == 1 and c.last_used == rig.clock.seconds() and c.name == "blue key"
    assert rig.audit.records[-1]["reason"] == "ok" and rig.audit.records[-1]["credential"] == c.id[:16]


def test_replayed_assertion_is_refused(rig):
    key = register(rig, "alice")
    o = password_step(rig, "alice")
    resp = key.assert_(o.webauthn_options, ORIGIN)
    assert key_step(rig, "alice", o, resp).ok
    o2 = password_step(rig, "alice")
    again = key_step(rig, "alice", o2, resp)
    assert not again.ok and again.reason == "webauthn-replay"


@pytest.mark.parametrize("origin,rp,reason", [("https://evil.example.net", None, "webauthn-wrong-origin"),
                                              ("http://console.example.org", None, "webauthn-wrong-origin"),
                                              (ORIGIN, "example.org", "webauthn-wrong-rp")])
def test_other_origin_or_rp_is_refused(rig, origin, rp, reason):
    key = register(rig, "alice")
    o = password_step(rig, "alice")
    out = key_step(rig, "alice", o, key.assert_(o.webauthn_options, origin, rp_id=rp))
    assert not out.ok and out.reason == reason
    assert rig.audit.records[-1]["reason"] == reason and rig.audit.records[-1]["decision"] == "deny"


def test_credential_of_another_account_is_refused(rig):
    alice_key = register(rig, "alice")
    register(rig, "bob")
    o = password_step(rig, "bob")
    out = key_step(rig, "bob", o, alice_key.assert_(o.webauthn_options, ORIGIN))
    assert not out.ok and out.reason == "webauthn-unknown-credential"


def test_counter_regression_is_refused_and_audited(rig):
    key = register(rig, "alice")
    o = password_step(rig, "alice")
    assert key_step(rig, "alice", o, key.assert_(o.webauthn_options, ORIGIN, counter=7)).ok
    o = password_step(rig, "alice")
    out = key_step(rig, "alice", o, key.assert_(o.webauthn_options, ORIGIN, counter=7))
    assert not out.ok and out.reason == "webauthn-counter-regression"
    ev = [r for r in rig.audit.records if r["event"] == "webauthn" and r["reason"] == "counter-regression"]
    assert ev and ev[-1]["stored_count"] == 7 and ev[-1]["received_count"] == 7 and ev[-1]["account"] == "alice"
    assert CredentialFile(rig.folder / "wa.json").credentials("alice")[0].sign_count == 7


def test_challenge_bound_to_certificate_account_and_time(rig):
    key = register(rig, "alice")
    o = password_step(rig, "alice")
    resp = key.assert_(o.webauthn_options, ORIGIN)
    other_cert = rig.conn("alice", cert=b"another card")
    out = rig.login.authenticate(account="alice", conn=other_cert, password="pw", webauthn=resp)
    assert out.reason == "webauthn-challenge-invalid"
    o = password_step(rig, "alice")
    resp = key.assert_(o.webauthn_options, ORIGIN)
    rig.clock.advance(61)
    out = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="pw", webauthn=resp)
    assert out.reason == "webauthn-challenge-expired"


def test_user_verification_required_per_account(rig):
    key = register(rig, "bob")
    assert rig.login.webauthn.uv("bob") == "required" and rig.login.webauthn.uv("alice") == "preferred"
    o = password_step(rig, "bob")
    assert o.webauthn_options["userVerification"] == "required"
    out = key_step(rig, "bob", o, key.assert_(o.webauthn_options, ORIGIN, uv=False))
    assert out.reason == "webauthn-uv-required"
    # alice (preferred) may log in without verification
    akey = register(rig, "alice")
    o = password_step(rig, "alice")
    assert key_step(rig, "alice", o, akey.assert_(o.webauthn_options, ORIGIN, uv=False)).ok


def test_registration_refusals(rig):
    f = rig.login.webauthn
    conn = rig.conn("alice")
    key = SoftKey("console.example.org")
    opts = f.registration_options("alice", conn.identity.fingerprint, rig.clock.seconds())
    with pytest.raises(WebAuthnError) as e:
        f.register("alice", conn.identity.fingerprint, key.register(opts, "https://evil.example.net"), "k",
                   rig.clock.seconds(), {})
    assert e.value.reason == "webauthn-wrong-origin"
    with pytest.raises(WebAuthnError) as e:  # a registration challenge of alice used for bob
        f.register("bob", rig.conn("bob").identity.fingerprint, key.register(opts, ORIGIN), "k",
                   rig.clock.seconds(), {})
    assert e.value.reason == "webauthn-challenge-invalid"
    with pytest.raises(WebAuthnError) as e:
        f.register("alice", conn.identity.fingerprint, key.register(opts, ORIGIN), "\x1b[31mred", rig.clock.seconds(), {})
    assert e.value.reason == "webauthn-bad-name"
    f.register("alice", conn.identity.fingerprint, key.register(opts, ORIGIN), "k", rig.clock.seconds(), {})
    with pytest.raises(WebAuthnError) as e:  # the same challenge twice
        f.register("alice", conn.identity.fingerprint, SoftKey("console.example.org").register(opts, ORIGIN), "k2",
                   rig.clock.seconds(), {})
    assert e.value.reason == "webauthn-replay"
    assert [r["reason"] for r in rig.audit.records if r["event"] == "webauthn"] == [
        "webauthn-wrong-origin", "webauthn-challenge-invalid", "webauthn-bad-name", "enrolled", "webauthn-replay"]


def test_unreadable_credentials_file_fails_closed(rig):
    register(rig, "alice")
    (rig.folder / "wa.json").write_text("{not json")
    assert rig.login.webauthn_enrolled("alice")  # the key stays required
    o = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="pw")
    assert not o.ok


def test_api_carries_the_ceremony(rig):
    register(rig, "alice")
    o = password_step(rig, "alice")
    resp = outcome_response(o)
    body = json.loads(resp.body)
    assert resp.status == 401 and body["webauthn"]["publicKey"]["challenge"] == o.webauthn_options["challenge"]
    assert body["required_auth_methods"] == [["tls-cert", "password", "webauthn"]]
    assert json.loads(parse_body(b'{"account": "alice", "webauthn": {"id": "x"}}')["webauthn"]) == {"id": "x"}
    with pytest.raises(ValueError, match="webauthn"):
        parse_body(b'{"account": "alice", "webauthn": 3}')


def test_effective_rules_with_both_enrolments():
    rules = [["tls-cert", "webauthn"], ["tls-cert", "password", "totp"], ["tls-cert", "password"]]
    assert factors.effective_rules(rules, False, False) == [["tls-cert", "password"]]
    assert factors.effective_rules(rules, True, False) == [["tls-cert", "password", "totp"]]
    assert factors.effective_rules(rules, False, True) == [["tls-cert", "webauthn"]]
    assert factors.effective_rules(rules, True, True) == [["tls-cert", "webauthn"], ["tls-cert", "password", "totp"]]


def _conf(tmp_path, extra):
    return ("[listen]\ncertificate = c.pem\nkey = k.pem\n[trust]\nstore = t\n[upstream]\nurl = http://127.0.0.1:9\n"
            '[login]\nrequired_auth_methods = [["tls-cert", "webauthn"]]\n' + extra)


@pytest.mark.parametrize("extra,key,why", [
    ("", "rp_id", "is required"),
    ("[webauthn]\nrp_id = 10.0.0.1\norigin = https://10.0.0.1\ncredentials = w.json\n", "rp_id", "IP address"),
    ("[webauthn]\nrp_id = example.org\norigin = https://evil.net\ncredentials = w.json\n", "origin", "not on"),
    ("[webauthn]\nrp_id = example.org\norigin = https://example.org/x\ncredentials = w.json\n", "origin", "nothing"),
    ("[webauthn]\nrp_id = example.org\norigin = https://example.org\n", "credentials", "is required"),
    ("[account:bob]\nwebauthn_user_verification = always\n", "webauthn_user_verification", "not one of"),
])
def test_config_problems(tmp_path, extra, key, why):
    with pytest.raises(ConfigError) as e:
        parse_config(_conf(tmp_path, extra), tmp_path / "c.conf")
    assert any(p.key == key and why in p.reason for p in e.value.problems), e.value.problems


def test_cli_list_and_remove(rig, tmp_path, monkeypatch):
    from proxy.login import webauthn_cli

    register(rig, "alice", name="blue key")
    register(rig, "alice", name="red key")
    from proxy.stores.testing import make_config

    conf = tmp_path / "c.conf"
    audit = tmp_path / "audit.log"
    cfg = make_config({"webauthn": {"credentials": rig.folder / "wa.json"}, "audit": {"file": str(audit)}})
    seen = []
    monkeypatch.setattr(webauthn_cli, "_login_section", lambda path: seen.append(path) or (cfg, cfg.login))
    out, err = io.StringIO(), io.StringIO()
    assert webauthn_cli.main(["list", "alice", "--json", "--config", str(conf)], stdout=out, stderr=err) == 0
    rows = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r["name"] for r in rows] == ["blue key", "red key"]
    out = io.StringIO()
    assert webauthn_cli.main(["--config", str(conf), "remove", "alice", "--key", "red key"], stdout=out,
                             stderr=err) == 0
    assert [c.name for c in CredentialFile(rig.folder / "wa.json").credentials("alice")] == ["blue key"]
    rec = json.loads(audit.read_text().splitlines()[-1])
    assert rec["event"] == "webauthn" and rec["decision"] == "remove" and rec["name"] == "red key"
    from trust.cli_errors import OperatorError, report

    with pytest.raises(OperatorError) as refused:  # the dispatcher prints it: one line, status 2
        webauthn_cli.main(["remove", "bob", "--config", str(conf)], stdout=io.StringIO(), stderr=err)
    err = io.StringIO()
    assert report("certgate webauthn", refused.value, err) == 2
    assert err.getvalue().startswith("certgate webauthn remove: ") and err.getvalue().count("\n") == 1
    assert "'bob' has no security key" in err.getvalue()
    assert seen == [str(conf)] * 3  # --config before or after the verb


def test_key_alone_after_the_certificate(tmp_path):
    """Rules where the key replaces the password: step 1 offers the key, one POST logs in."""
    from proxy.login.pages import LoginPage
    from proxy.login.testing import head

    r = make_rig(tmp_path, {"required_auth_methods": [["tls-cert", "webauthn"], ["tls-cert", "password"]]},
                 webauthn={"rp_id": "console.example.org", "origin": ORIGIN, "credentials": tmp_path / "wa.json"})
    r.set_password("alice", "pw")
    key = register(r, "alice")
    page = LoginPage(r.login).render(head(b"GET", b"/.certgate/login"), r.conn("alice")).body.decode()
    assert 'id="webauthn-go"' in page and 'id="password"' not in page
    opts = json.loads(page.split('data-mode="get">', 1)[1].split("</script>", 1)[0])
    o = r.login.authenticate(account="alice", conn=r.conn("alice"), webauthn=key.assert_(opts, ORIGIN))
    assert o.ok and o.proven == {"tls-cert", "webauthn"}
    # the password alone no longer opens a session for alice
    assert not r.login.authenticate(account="alice", conn=r.conn("alice"), password="pw").ok


@pytest.mark.parametrize("response,reason", [
    ("not json", "webauthn-malformed"),
    ('{"id": 1}', "webauthn-malformed"),
    ("[]", "webauthn-malformed"),
    ("x" * 20000, "webauthn-malformed"),
    ('{"id":"AA","rawId":"AA","type":"public-key","response":{"clientDataJSON":"!!","authenticatorData":"AA",'
     '"signature":"AA"}}', "webauthn-malformed"),
])
def test_malformed_assertions_get_one_reason_and_no_traceback(rig, response, reason):
    register(rig, "alice")
    o = password_step(rig, "alice")
    out = key_step(rig, "alice", o, response)
    assert not out.ok and out.reason == reason


def test_a_challenge_certgate_did_not_seal_is_refused(rig):
    key = register(rig, "alice")
    o = password_step(rig, "alice")
    forged = dict(o.webauthn_options, challenge="Y2d3MS5leUo5LmZvcmdlZA")  # "cgw1.eyJ9.forged"
    out = key_step(rig, "alice", o, key.assert_(forged, ORIGIN))
    assert out.reason == "webauthn-challenge-invalid"
    # the failed step consumed its receipt too
    assert rig.login.authenticate(account="alice", conn=rig.conn("alice"), receipt=o.receipt).reason == \
        "receipt-invalid"


def test_two_gateways_sharing_store_and_secret(rig):
    """Options from one gateway, the assertion checked by another; the replay refused by the first."""
    other = make_rig(rig.folder, {"required_auth_methods": RULES}, store=rig.store, clock=rig.clock,
                     webauthn={"rp_id": "console.example.org", "origin": ORIGIN,
                               "credentials": rig.folder / "wa.json", "challenge_lifetime": 60.0})
    key = register(rig, "alice")
    o = password_step(rig, "alice")
    resp = key.assert_(o.webauthn_options, ORIGIN)
    assert other.login.authenticate(account="alice", conn=other.conn("alice"), receipt=o.receipt,
                                    webauthn=resp).ok
    again = rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="pw", webauthn=resp)
    assert again.reason == "webauthn-replay"


def test_store_counter_decides_when_the_file_lags(rig):
    """The credentials file restored from an old backup (or not yet written by another worker):
    the store's forward-only counter still refuses a count it has seen."""
    key = register(rig, "alice")
    o = password_step(rig, "alice")
    assert key_step(rig, "alice", o, key.assert_(o.webauthn_options, ORIGIN, counter=3)).ok
    path = rig.folder / "wa.json"
    data = json.loads(path.read_text())
    data["accounts"]["alice"][0]["sign_count"] = 0
    path.write_text(json.dumps(data))
    o = password_step(rig, "alice")
    out = key_step(rig, "alice", o, key.assert_(o.webauthn_options, ORIGIN, counter=2))
    assert out.reason == "webauthn-counter-regression"
    ev = [r for r in rig.audit.records if r["event"] == "webauthn" and r["reason"] == "counter-regression"]
    assert ev[-1]["received_count"] == 2
    o = password_step(rig, "alice")
    assert key_step(rig, "alice", o, key.assert_(o.webauthn_options, ORIGIN, counter=4)).ok
