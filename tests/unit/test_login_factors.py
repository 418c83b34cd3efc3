"""Factor rules: Keystone superset semantics, enrolment, reachable rules."""

import pytest

from proxy.login import factors

PW = [["tls-cert", "password"], ["tls-cert", "password", "totp"]]


def test_superset_satisfies():
    assert factors.satisfied([["tls-cert", "password"]], {"tls-cert", "password", "totp"}) == ["tls-cert", "password"]
    assert factors.satisfied([["tls-cert", "password"]], {"tls-cert"}) is None
    assert factors.satisfied([["tls-cert"]], {"tls-cert"}) == ["tls-cert"]
    assert factors.satisfied([], {"tls-cert", "password", "totp"}) is None


def test_any_rule_suffices():
    rules = [["tls-cert", "password"], ["tls-cert", "totp"]]
    assert factors.satisfied(rules, {"tls-cert", "totp"}) == ["tls-cert", "totp"]


def test_enrolled_totp_is_never_skippable():
    assert factors.effective_rules(PW, totp_enrolled=True) == [["tls-cert", "password", "totp"]]
    assert factors.effective_rules(PW, totp_enrolled=False) == [["tls-cert", "password"]]
    # alternatives: an enrolled user must use a totp rule
    alt = [["tls-cert", "password"], ["tls-cert", "totp"]]
    assert factors.effective_rules(alt, True) == [["tls-cert", "totp"]]
    # no totp rule at all: enrolment changes nothing
    assert factors.effective_rules([["tls-cert", "password"]], True) == [["tls-cert", "password"]]
    # every rule needs totp and the account is not enrolled: nothing applies (cannot log in)
    assert factors.effective_rules([["tls-cert", "totp"]], False) == []


def test_reachable_is_keystone_overlap():
    rules = [["tls-cert", "password", "totp"]]
    assert factors.reachable(rules, {"tls-cert", "password"}) == rules
    assert factors.reachable(rules, set()) == rules
    assert factors.missing(rules, {"tls-cert", "password"}) == ["totp"]
    assert factors.missing([["tls-cert", "password"], ["tls-cert", "totp"]], {"tls-cert"}) == ["password", "totp"]


@pytest.mark.parametrize("rules,msg", [
    ([["password"]], "lacks tls-cert"),
    ([["tls-cert", "x509"]], "unknown method 'x509'"),
    ([[]], "rule 0 is empty"),
])
def test_bad_rules_say_why(rules, msg):
    with pytest.raises(ValueError, match=msg):
        factors.normalize_rules(rules)


def test_normalize_orders_and_dedups():
    assert factors.normalize_rules([["password", "tls-cert"], ["tls-cert", "password"]]) == [["tls-cert", "password"]]
