"""Header hygiene (proxy.http.headers): identity headers stripped in every spelling, then ours set."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http.headers import (HeaderPolicy, HeaderValueError, certgate_headers, clean_request_headers,
                           clean_response_headers, client_cert_value, connection_tokens, normalise)
from proxy.listener.identity import anonymous

POLICY = HeaderPolicy.from_config(SimpleNamespace(account="X-Remote-User", forwarded=True, client_cert=True,
                                                  strip=["X-Internal-Token"], preserve_host=True))

SPOOFED = [
    b"X-Remote-User", b"x-remote-user", b"X_REMOTE_USER", b"x-Remote_User", b"Remote-User", b"REMOTE_USER",
    b"X-SSL-Client-Cert", b"x-ssl-client-s-dn", b"X_SSL_CLIENT_VERIFY", b"X-Client-Cert", b"x-client-cert-chain",
    b"Client-Cert", b"client_cert", b"Client-Cert-Chain", b"X-Forwarded-Client-Cert", b"x_forwarded_client_cert",
    b"X-Forwarded-For", b"x-forwarded-proto", b"X-Forwarded-Host", b"X_Forwarded_Port", b"Forwarded",
    b"X-Real-IP", b"x_real_ip", b"X-Internal-Token", b"x_internal_token",
]


def _names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [k for k, _ in headers]


def test_every_spoofed_identity_header_is_removed_in_any_case_and_spelling() -> None:
    """HTTP-06: each spelling and duplicates of identity headers are stripped, others kept."""
    hs = [(b"Host", b"console.example")] + [(n, b"mallory") for n in SPOOFED] + [(n, b"again") for n in SPOOFED]
    hs.append((b"Accept", b"*/*"))
    out = clean_request_headers(hs, POLICY)
    assert out == [(b"Host", b"console.example"), (b"Accept", b"*/*")]


def test_hop_by_hop_and_connection_listed_headers_are_removed() -> None:
    """Connection, Keep-Alive, TE, Upgrade, framing headers and Connection-listed names go."""
    hs = [(b"Host", b"h"), (b"Connection", b"keep-alive, X-Custom, Host"), (b"Keep-Alive", b"timeout=5"),
          (b"TE", b"trailers"), (b"Upgrade", b"h2c"), (b"Transfer-Encoding", b"chunked"),
          (b"Content-Length", b"5"), (b"Proxy-Connection", b"x"), (b"X-Custom", b"1"), (b"x_custom", b"2"),
          (b"Expect", b"100-continue"), (b"Proxy-Authorization", b"Basic x"), (b"Cookie", b"a=1")]
    out = clean_request_headers(hs, POLICY)
    assert out == [(b"Host", b"h"), (b"Cookie", b"a=1")]  # Host survives even when listed


def test_connection_cannot_drop_certgate_headers() -> None:
    """HTTP-07: a client listing our headers in Connection only removes its own copies."""
    hs = [(b"Host", b"h"), (b"Connection", b"X-Forwarded-For, X-Remote-User, Client-Cert"),
          (b"X-Forwarded-For", b"6.6.6.6")]
    ident = anonymous("10.0.0.7", 5555, 0.0)
    cleaned = clean_request_headers(hs, POLICY)
    ours = certgate_headers(POLICY, ident, "alice", b"h")
    final = cleaned + ours
    assert (b"X-Remote-User", b"alice") in final
    assert (b"X-Forwarded-For", b"10.0.0.7") in final
    assert [v for k, v in final if k.lower() == b"x-forwarded-for"] == [b"10.0.0.7"]


def test_repeated_headers_keep_order_and_case() -> None:
    """Repeated ordinary headers keep all their values in wire order and original case."""
    hs = [(b"Host", b"h"), (b"X-A", b"1"), (b"x-b", b"2"), (b"X-A", b"3"), (b"Cookie", b"a=1"), (b"Cookie", b"b=2")]
    assert clean_request_headers(hs, POLICY) == hs


def test_set_header_names_remove_client_copies() -> None:
    """A name in Forward.set_headers removes every client copy of it (any spelling)."""
    hs = [(b"Host", b"h"), (b"Authorization", b"Basic evil"), (b"X-Superuser", b"any")]
    out = clean_request_headers(hs, POLICY, [b"authorization", b"X_Superuser"])
    assert out == [(b"Host", b"h")]


def test_certgate_headers_forwarded_and_rfc9440() -> None:
    """Our headers come from the identity: XFF/Proto/Host and RFC 9440 Client-Cert(-Chain)."""
    ident = SimpleNamespace(client_ip="192.0.2.1", leaf_der=b"\x30\x03leaf", chain_der=(b"\x30\x02ca",))
    out = certgate_headers(POLICY, ident, "alice", b"console.example:8443", [(b"Authorization", b"Bearer t")])  # type: ignore[arg-type]
    assert out == [
        (b"X-Remote-User", b"alice"), (b"X-Forwarded-For", b"192.0.2.1"), (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"console.example:8443"), (b"Client-Cert", client_cert_value(b"\x30\x03leaf")),
        (b"Client-Cert-Chain", client_cert_value(b"\x30\x02ca")), (b"Authorization", b"Bearer t")]
    assert client_cert_value(b"\x00\x01") == b":AAE=:"


def test_no_account_no_account_header_and_forwarded_off() -> None:
    """Without an account nothing claims one; forwarded=no sets no X-Forwarded-*."""
    pol = HeaderPolicy.from_config(SimpleNamespace(account="X-User", forwarded=False, client_cert=False, strip=[],
                                                   preserve_host=True))
    assert certgate_headers(pol, anonymous("1.2.3.4", 1, 0.0), None, b"h") == []
    assert pol.is_stripped(b"x_user") and pol.is_stripped(b"X-Remote-User")


@pytest.mark.parametrize("bad", ["al\r\nice", "al\nX-Evil: 1", "a\x00b", "a\x7fb"])
def test_control_characters_in_our_values_are_refused(bad: str) -> None:
    """A value with CR/LF/NUL/DEL never becomes a header (CVE-2023-27493 class)."""
    with pytest.raises(HeaderValueError, match="control character"):
        certgate_headers(POLICY, None, bad, None)


def test_response_hygiene_keeps_repeats_and_drops_hop_by_hop() -> None:
    """Upstream hop-by-hop headers and names its Connection lists are removed; Set-Cookie repeats stay."""
    hs = [(b"Set-Cookie", b"a=1"), (b"Connection", b"X-Secret, close"), (b"X-Secret", b"leak"),
          (b"Keep-Alive", b"timeout=5"), (b"Set-Cookie", b"b=2"), (b"Transfer-Encoding", b"chunked"),
          (b"Content-Length", b"3"), (b"Upgrade", b"websocket"), (b"Proxy-Connection", b"x")]
    assert clean_response_headers(hs) == [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")]
    assert (b"Upgrade", b"websocket") in clean_response_headers(hs, keep_upgrade=True)


def test_normalise_and_connection_tokens() -> None:
    assert normalise(b"X_Forwarded_For") == b"x-forwarded-for"
    assert connection_tokens([(b"connection", b" Upgrade ,keep-alive"), (b"Connection", b"X_A")]) == {
        b"upgrade", b"keep-alive", b"x-a"}


_name_chars = st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"))


@settings(derandomize=True, max_examples=200)
@given(base=st.sampled_from(SPOOFED), flips=st.lists(st.booleans(), min_size=40, max_size=40),
       unders=st.lists(st.booleans(), min_size=40, max_size=40))
def test_spelling_variants_property(base: bytes, flips: list[bool], unders: list[bool]) -> None:
    """Any mix of case and -/_ of a spoofed name is stripped."""
    chars = []
    for i, ch in enumerate(base.decode()):
        if ch in "-_":
            ch = "_" if unders[i % 40] else "-"
        elif flips[i % 40]:
            ch = ch.swapcase()
        chars.append(ch)
    name = "".join(chars).encode()
    assert clean_request_headers([(name, b"x")], POLICY) == []
    assert POLICY.is_stripped(name)
