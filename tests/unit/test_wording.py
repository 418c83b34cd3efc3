"""proxy.gate.wording: refusals in plain words, from the verdict's codes, never its raw text."""

from __future__ import annotations

import pytest

from proxy.gate import wording
from proxy.stores.testing import make_identity

RAW = "unknown-ca: issuer CN=Evil CA is not in trust.d/corp.pem"


@pytest.mark.parametrize("code,clause", [
    ("expired", "it has expired"), ("pinned-expired", "it has expired"), ("not-yet-valid", "it is not valid yet"),
    ("revoked", "it has been revoked"), ("unknown-ca", "not issued by an authority this gateway trusts"),
    ("chain-invalid", "not issued by an authority"), ("wrong-usage", "not meant for logging in"),
    ("ca-leaf", "not meant for logging in"), ("weak-signature", "too weak"),
    ("crl-expired", "revocation status cannot be checked"), ("something-new", "it could not be verified"),
])
def test_each_verdict_code_has_plain_words(code, clause):
    ident = make_identity("alice", ok=False, reason_code=code, invalid_reason=RAW)
    text = wording.certificate_refused(ident)
    assert clause in text and "restart the browser" in text
    assert "trust.d" not in text and "Evil CA" not in text and f"{code}:" not in text  # never the raw verdict


def test_problem_for_each_kind_of_connection():
    assert wording.certificate_problem(make_identity(presented=False)) == wording.NO_CERTIFICATE
    assert wording.certificate_problem(make_identity("alice")) is None
    refused = wording.certificate_problem(make_identity("alice", ok=False, reason_code="revoked"))
    assert refused is not None and "revoked" in refused and "\n" not in refused
