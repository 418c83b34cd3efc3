"""Gate: endpoints, front doors, client_auth none, invalid certificates, certificate-only mode."""

from __future__ import annotations

import json

from twisted.internet.task import Clock

from proxy.gate import wording
from proxy.observe.audit import memory_audit
from proxy.gate.decide import Gate
from proxy.http.messages import ConnContext, Forward, RequestHead, Response
from proxy.observe.metrics import Metrics
from proxy.paths import canonical_target
from tests.harness.config import make_config
from tests.harness.fakes import make_identity

HTML = [(b"Accept", b"text/html,application/xhtml+xml")]
JSON = [(b"Accept", b"application/json")]


def head(target: bytes = b"/", method: bytes = b"GET", headers=None) -> RequestHead:
    # as the HTTP layer makes it: the gate sees only canonical targets
    return RequestHead(method=method, target=canonical_target(target, method), version=b"1.1",
                       headers=list(headers or []))


def conn(identity) -> ConnContext:
    return ConnContext(identity=identity, connected_at=0.0)


class Door:
    def __init__(self, path: str) -> None:
        self.path = path
        self.calls = 0

    def matches(self, h, route) -> bool:
        return h.path == self.path

    def decide(self, h, c, route):
        self.calls += 1
        return Response(299, [], b"door")


def make_gate(sections=None, account_rules=None, endpoints=None, front_doors=(), metrics=None):
    cfg = make_config(sections, account_rules=account_rules)
    audit = memory_audit()
    g = Gate(config=cfg, sessions=None, clock=Clock(), audit=audit, endpoints=endpoints or {},
             front_doors=list(front_doors), metrics=metrics)
    return g, cfg, audit


def test_cert_only_valid_certificate_forwards_as_its_account():
    m = Metrics()
    g, cfg, audit = make_gate(metrics=m)
    d = g.decide(head(b"/x?y=1"), conn(make_identity("alice")))
    assert isinstance(d, Forward)
    assert d.account == "alice" and d.session_id is None and d.route is cfg.default_route
    assert m.value("gate_decisions_total", "forward") == 1
    assert audit.records == []  # the hot path writes no audit line


def test_invalid_certificate_is_explained_not_treated_as_absent():
    g, _, audit = make_gate({"listen": {"client_auth": "want"}})
    ident = make_identity("alice", ok=False, invalid_reason="expired: certificate expired at 2020-01-01")
    d = g.decide(head(headers=HTML), conn(ident))
    assert isinstance(d, Response) and d.status == 403
    # plain words for the person (the same sentence as the login page), the verdict in the audit
    assert wording.certificate_refused(ident).encode() in d.body and b"<!DOCTYPE html>" in d.body
    assert b"it has expired" in d.body and b"expired: certificate" not in d.body
    assert b'<a href="/.certgate/login?next=/">Go to the login page</a>' in d.body
    assert audit.records[-1]["reason"] == "certificate-invalid"
    assert audit.records[-1]["detail"] == "expired: certificate expired at 2020-01-01"
    assert audit.records[-1]["fingerprint"] == ident.fingerprint
    d2 = g.decide(head(headers=JSON), conn(ident))
    body = json.loads(d2.body)
    assert d2.status == 403 and body["error"] == "certificate-invalid"
    assert "expired" in body["message"]


def test_invalid_certificate_refused_even_in_session_mode():
    g, _, _ = make_gate({"listen": {"client_auth": "want"},
                         "login": {"required_auth_methods": [["tls-cert", "password"]]}})
    d = g.decide(head(headers=JSON), conn(make_identity("alice", ok=False)))
    assert d.status == 403 and json.loads(d.body)["error"] == "certificate-invalid"


def test_cert_only_without_certificate_is_a_clear_403():
    g, _, audit = make_gate({"listen": {"client_auth": "want"}})
    d = g.decide(head(headers=HTML), conn(make_identity(presented=False)))
    assert isinstance(d, Response) and d.status == 403
    assert b"certificate" in d.body
    assert audit.records[-1]["reason"] == "certificate-required"


def test_client_auth_none_forwards_anonymously():
    g, _, _ = make_gate({"listen": {"client_auth": "none"}})
    d = g.decide(head(), conn(make_identity(presented=False)))
    assert isinstance(d, Forward) and d.account is None and d.session_id is None


def test_certgate_paths_go_to_endpoints_and_unknown_is_404():
    seen = []

    def ep(h, c):
        seen.append(h.path)
        return Response(204)

    g, _, _ = make_gate(endpoints={"/.certgate/ping": ep})
    assert g.decide(head(b"/.certgate/ping"), conn(make_identity())).status == 204
    assert seen == ["/.certgate/ping"]
    for target in (b"/.certgate/nope", b"/.certgate", b"/.certgate/ping/x", b"/%2Ecertgate/x"):
        d = g.decide(head(target, headers=JSON), conn(make_identity()))
        assert isinstance(d, Response) and d.status == 404, target
    # endpoints are reached even on a connection whose certificate is invalid (the login page explains)
    assert g.decide(head(b"/.certgate/ping"), conn(make_identity(ok=False))).status == 204


def test_endpoint_paths_must_be_under_the_prefix():
    import pytest

    with pytest.raises(ValueError, match="not under"):
        make_gate(endpoints={"/login": lambda h, c: Response(200)})


def test_front_doors_come_before_certificate_checks():
    door = Door("/cockpit/login")
    g, _, _ = make_gate({"listen": {"client_auth": "want"}}, front_doors=[door])
    d = g.decide(head(b"/cockpit/login"), conn(make_identity(presented=False)))
    assert d.status == 299 and door.calls == 1
    d = g.decide(head(b"/other"), conn(make_identity("alice")))
    assert isinstance(d, Forward) and door.calls == 1


def test_account_rules_choose_cert_only_per_account():
    g, _, _ = make_gate({"login": {"required_auth_methods": [["tls-cert", "password"]]}},
                        account_rules={"robot": [["tls-cert"]]})
    assert g.cert_only_for("robot") and not g.cert_only_for("alice") and not g.cert_only_for(None)
    d = g.decide(head(), conn(make_identity("robot", cert=b"robot")))
    assert isinstance(d, Forward) and d.account == "robot"


def test_global_cert_only_with_an_account_needing_a_password():
    g, _, _ = make_gate(account_rules={"alice": [["tls-cert", "password", "totp"]]})
    assert g.cert_only_for("bob") and not g.cert_only_for("alice")
    # alice needs a session; there is no session manager here, so she is sent to log in
    d = g.decide(head(headers=HTML), conn(make_identity("alice")))
    assert d.status == 302 and dict(d.headers)[b"Location"] == b"/.certgate/login?next=/"
    d = g.decide(head(b"/api", method=b"POST", headers=JSON), conn(make_identity("alice")))
    assert d.status == 401
    assert dict(d.headers)[b"WWW-Authenticate"] == b'Certgate realm="certgate"'
    assert json.loads(d.body) == {"error": "login-required", "message": "log in first", "login": "/.certgate/login"}


def test_access_rules_come_from_trust_access():
    import ipaddress

    from trust.access import AccessRule

    rules = [AccessRule(name="office", ip_ranges=(ipaddress.ip_network("10.0.0.0/8"),)),
             AccessRule(name="robots", cns=("robot",), ip_ranges=(ipaddress.ip_network("192.0.2.0/24"),))]
    cfg = make_config(access_rules=rules)
    audit = memory_audit()
    g = Gate(config=cfg, sessions=None, clock=Clock(), audit=audit, endpoints={}, front_doors=[])
    d = g.decide(head(headers=JSON), conn(make_identity("alice", client_ip="10.1.2.3")))
    assert isinstance(d, Forward) and d.account == "alice"
    d = g.decide(head(headers=JSON), conn(make_identity("alice", client_ip="192.0.2.9")))
    assert isinstance(d, Response) and d.status == 403
    body = json.loads(d.body)
    assert body["error"] == "access-denied" and "192.0.2.9" in body["message"]
    assert audit.records[-1]["reason"] == "access-denied"
    d = g.decide(head(), conn(make_identity("robot", cert=b"robot", client_ip="192.0.2.9")))
    assert isinstance(d, Forward) and d.account == "robot"
