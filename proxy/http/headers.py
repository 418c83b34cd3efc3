"""Header hygiene for the forwarding path: pure functions over ``(name, value)`` byte pairs.

Requests: every client-supplied hop-by-hop header, whatever ``Connection:`` lists, and every
client copy of an identity header (any case, ``-`` or ``_`` spelling, duplicates) is removed
*first*; only then certgate adds its own (account, ``X-Forwarded-*``, RFC 9440 ``Client-Cert``)
and the gate's ``Forward.set_headers``. So a client can neither forge an identity header nor
make certgate drop one of its own (Apache CVE-2022-31813). ``Host`` and ``Origin`` pass
unchanged. Responses: hop-by-hop headers of the upstream are removed.

These functions do not parse framing: ``Content-Length`` and ``Transfer-Encoding`` are removed
here and re-added by the HTTP layer from the framing it actually uses. They do not validate
header syntax either (the parser did); values certgate sets are checked for CR/LF/NUL.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from proxy.listener.identity import ConnectionIdentity

Headers = list[tuple[bytes, bytes]]

#: Hop-by-hop and framing headers (RFC 9110 §7.6.1, RFC 9112) never passed on as received.
HOP_BY_HOP: frozenset[bytes] = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"trailers",
    b"transfer-encoding", b"upgrade", b"content-length", b"proxy-authorization", b"expect",
    b"http2-settings",
})

#: Client identity headers some upstream might believe (exact names, normalised).
IDENTITY_NAMES: frozenset[bytes] = frozenset({
    b"x-remote-user", b"remote-user", b"x-real-ip", b"forwarded", b"client-cert",
    b"client-cert-chain", b"x-client-ip", b"x-client-verify", b"x-client-dn", b"x-client-s-dn",
    b"x-client-i-dn", b"x-authenticated-user", b"x-auth-request-user", b"x-auth-request-email",
    b"x-auth-request-preferred-username", b"x-webauth-user", b"x-remote-group", b"x-remote-email",
    b"front-end-https", b"x-url-scheme", b"x-original-url", b"x-rewrite-url", b"true-client-ip",
    b"cf-connecting-ip", b"x-cluster-client-ip", b"remote-addr", b"x-remote-addr",
})

#: Name prefixes (normalised) that are always identity/forwarding headers.
IDENTITY_PREFIXES: tuple[bytes, ...] = (
    b"x-forwarded-", b"x-ssl-", b"ssl-client", b"x-client-cert", b"x-remote-user",
)

#: Names a ``Connection:`` list may not remove (the request would change meaning, not hop).
_CONNECTION_PROTECTED: frozenset[bytes] = frozenset({b"host"})

#: Response headers removed from upstream answers (framing is re-added by the HTTP layer).
RESPONSE_HOP_BY_HOP: frozenset[bytes] = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"trailers",
    b"transfer-encoding", b"upgrade", b"content-length",
})


class HeaderValueError(ValueError):
    """A value certgate was asked to send contains CR, LF, NUL or another control character."""


def normalise(name: bytes) -> bytes:
    """Lower-case ``name`` and spell ``_`` as ``-`` (how many servers map names to variables)."""
    n = name.lower()
    return n.replace(b"_", b"-") if b"_" in n else n


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """The normalised tokens of every ``Connection`` header (comma separated, OWS trimmed)."""
    out: set[bytes] = set()
    for k, v in headers:
        if k.lower() == b"connection":
            for tok in v.split(b","):
                tok = tok.strip()
                if tok:
                    out.add(normalise(tok))
    return out


def check_value(value: bytes, what: str) -> bytes:
    """Return ``value`` if it has no CTL characters (TAB allowed); raise HeaderValueError otherwise."""
    for b in value:
        if (b < 0x20 and b != 0x09) or b == 0x7F:
            raise HeaderValueError(f"{what}: value contains control character 0x{b:02x}")
    return value


def client_cert_value(der: bytes) -> bytes:
    """RFC 9440 ``Client-Cert`` value: a Structured Field byte sequence ``:base64:``."""
    return b":" + base64.b64encode(der) + b":"


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    """Compiled header rules from ``[headers]`` (built once, used per request).

    ``strip`` holds normalised names removed from every request besides the built-in sets.
    """

    account_header: bytes
    forwarded: bool
    client_cert: bool
    preserve_host: bool
    strip: frozenset[bytes]

    @classmethod
    def from_config(cls, headers_section: object) -> "HeaderPolicy":
        """Build from a ``[headers]`` section (attributes ``account``, ``forwarded``, ...)."""
        account = str(getattr(headers_section, "account", "X-Remote-User")).encode("ascii")
        extra = {normalise(s.encode("ascii")) for s in getattr(headers_section, "strip", [])}
        strip = frozenset(HOP_BY_HOP | IDENTITY_NAMES | extra | {normalise(account)})
        return cls(account_header=account, forwarded=bool(getattr(headers_section, "forwarded", True)),
                   client_cert=bool(getattr(headers_section, "client_cert", False)),
                   preserve_host=bool(getattr(headers_section, "preserve_host", True)), strip=strip)

    def is_stripped(self, name: bytes, extra: frozenset[bytes] | set[bytes] = frozenset()) -> bool:
        """True if a client header called ``name`` never reaches the upstream."""
        n = normalise(name)
        return n in self.strip or n in extra or n.startswith(IDENTITY_PREFIXES)


def clean_request_headers(headers: Sequence[tuple[bytes, bytes]], policy: HeaderPolicy,
                          set_names: Iterable[bytes] = ()) -> Headers:
    """Client headers without hop-by-hop, ``Connection``-listed and identity headers.

    ``set_names`` are names certgate is about to set (their client copies go too). Order and
    repeats of the remaining headers are kept; ``Host`` always survives. Does not add anything.
    """
    strip = policy.strip
    out: Headers = []
    append = out.append
    listed: set[bytes] | None = None
    for k, v in headers:
        n = k.lower()
        if b"_" in n:
            n = n.replace(b"_", b"-")
        if n in strip or n.startswith(IDENTITY_PREFIXES):
            if n == b"connection" and len(k) == 10:  # spelt exactly so: its tokens name more headers to drop
                toks = {normalise(t.strip()) for t in v.split(b",") if t.strip()}
                listed = toks if listed is None else listed | toks
            continue
        append((k, v))
    if set_names:
        names = {normalise(n) for n in set_names}
        listed = names if listed is None else listed | names
    if listed:
        # Names already stripped above need no second pass (``Connection: keep-alive``, the usual case).
        listed = listed - strip - _CONNECTION_PROTECTED
        if listed:
            out = [(k, v) for k, v in out if normalise(k) not in listed]
    return out


def certgate_headers(policy: HeaderPolicy, identity: "ConnectionIdentity | None", account: str | None,
                     host: bytes | None, set_headers: Sequence[tuple[bytes, bytes]] = ()) -> Headers:
    """The headers certgate adds after cleaning, from verified state only.

    ``account`` (``Forward.account``) goes in the configured account header; ``X-Forwarded-For``
    / ``-Proto`` / ``-Host`` when ``[headers] forwarded``; RFC 9440 ``Client-Cert`` and
    ``Client-Cert-Chain`` when ``[headers] client_cert`` and the identity holds a leaf/chain.
    Raises HeaderValueError if a value would carry a control character.
    """
    out: Headers = []
    if account is not None:
        out.append((policy.account_header, check_value(account.encode("utf-8"), "account")))
    if policy.forwarded and identity is not None:
        out.append((b"X-Forwarded-For", check_value(identity.client_ip.encode("ascii"), "client address")))
        out.append((b"X-Forwarded-Proto", b"https"))
        if host is not None:
            out.append((b"X-Forwarded-Host", host))
    if policy.client_cert and identity is not None and identity.leaf_der:
        out.append((b"Client-Cert", client_cert_value(identity.leaf_der)))
        if identity.chain_der:
            out.append((b"Client-Cert-Chain", b", ".join(client_cert_value(d) for d in identity.chain_der)))
    for k, v in set_headers:
        out.append((k, check_value(v, k.decode("latin-1"))))
    return out


def clean_response_headers(headers: Sequence[tuple[bytes, bytes]], keep_upgrade: bool = False) -> Headers:
    """Upstream response headers without hop-by-hop ones and whatever its ``Connection`` lists.

    With ``keep_upgrade`` (a validated 101) ``Upgrade`` stays; ``Connection`` is re-added by the
    caller. Order and repeats (``Set-Cookie``) are kept.
    """
    out: Headers = []
    append = out.append
    listed: set[bytes] | None = None
    for k, v in headers:
        n = k.lower()
        if n in RESPONSE_HOP_BY_HOP:
            if n == b"connection":
                toks = {t.strip().lower() for t in v.split(b",") if t.strip()}
                listed = toks if listed is None else listed | toks
            if not (keep_upgrade and n == b"upgrade"):
                continue
        append((k, v))
    if listed:
        # Hop-by-hop names are gone already (``Connection: keep-alive``, the usual case, needs no
        # second pass); a listed ``upgrade`` stays with ``keep_upgrade``.
        listed = listed - RESPONSE_HOP_BY_HOP
        if listed:
            out = [(k, v) for k, v in out if k.lower() not in listed]
    return out


def split_response_headers(headers: Sequence[tuple[bytes, bytes]]) -> tuple[Headers, Headers]:
    """``(end_to_end, hop_by_hop)`` of upstream response headers, each in order, in one pass.

    ``hop_by_hop`` holds the ``RESPONSE_HOP_BY_HOP`` headers with lower-case names (framing,
    ``Connection``); ``end_to_end`` the rest, as received, still including any name a
    ``Connection`` header lists: ``without_listed(end_to_end, hop_by_hop)`` is
    ``clean_response_headers(headers)``.
    """
    end: Headers = []
    hop: Headers = []
    for k, v in headers:
        n = k.lower()
        if n in RESPONSE_HOP_BY_HOP:
            hop.append((n, v))
        else:
            end.append((k, v))
    return end, hop


def without_listed(end_to_end: Headers, hop_by_hop: Sequence[tuple[bytes, bytes]]) -> Headers:
    """``end_to_end`` without the names the ``Connection`` headers in ``hop_by_hop`` list
    (see :func:`split_response_headers`); the same list when they list none."""
    listed: set[bytes] | None = None
    for n, v in hop_by_hop:
        if n == b"connection":
            toks = {t.strip().lower() for t in v.split(b",") if t.strip()}
            listed = toks if listed is None else listed | toks
    if listed:
        listed = listed - RESPONSE_HOP_BY_HOP
        if listed:
            return [(k, v) for k, v in end_to_end if k.lower() not in listed]
    return end_to_end


def render_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``Name: value\\r\\n`` lines joined (no final blank line)."""
    return b"".join([b"%s: %s\r\n" % kv for kv in headers])
