"""The pure rules of trusted sessions: when a session ends, how it is shown, how it is named.

Nothing here touches the store, the clock or Twisted: :class:`proxy.sessions.manager.SessionManager`
applies these rules (see its module for the semantics). A session's certificate expiry is read
from the certificate presented at login (:func:`remember_not_after`); only a record made by
another process (or before a restart) has its certificate parsed here, once per process.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

from proxy.clock import rfc3339
from proxy.interfaces import EndSettings, SessionCheck
from proxy.stores.interface import SessionRecord

if TYPE_CHECKING:  # pragma: no cover
    from proxy.http.messages import RequestHead
    from trust.presented import PresentedCertificate


#: certificate DER -> notAfter (epoch seconds); bounded, cleared when full
_NOT_AFTER: dict[bytes, float] = {}
_NOT_AFTER_MAX = 4096


def session_id_for(token: str) -> str:
    """The store id of a cookie token: lower-case hex SHA-256 of its ASCII text."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def ends_at(rec: SessionRecord, settings: EndSettings) -> tuple[float, str]:
    """When ``rec`` ends if nothing changes, and the reason code of that end.

    The earliest of: the proof deadline (``proved_at + grace``, or ``long_until`` capped at
    ``proved_at + long_grace`` while a long trusted session is active), ``last_seen +
    idle_timeout``, ``created_at + max_lifetime`` and the bound certificate's notAfter
    (``certificate-expired``). ``settings`` is the ``[sessions]`` section.
    """
    if rec.long_until > 0:
        best = (min(rec.long_until, rec.proved_at + settings.long_grace), "long-grace-expired")
    else:
        best = (rec.proved_at + settings.grace, "grace-expired")
    for cand in ((rec.last_seen + settings.idle_timeout, "idle-timeout"),
                 (rec.created_at + settings.max_lifetime, "max-lifetime"),
                 (cert_not_after(rec.cert_der), "certificate-expired")):
        if cand[0] < best[0]:
            best = cand
    return best


def remember_not_after(cert: "PresentedCertificate") -> None:
    """Note the notAfter of a certificate presented at login, so :func:`cert_not_after` of its
    session never parses it (+inf when its DER does not parse)."""
    na = cert.not_after_ts
    _put(cert.der, na if na is not None else math.inf)


def _put(der: bytes, value: float) -> None:
    if der not in _NOT_AFTER and len(_NOT_AFTER) >= _NOT_AFTER_MAX:
        _NOT_AFTER.clear()
    _NOT_AFTER[der] = value


def cert_not_after(der: bytes) -> float:
    """The certificate's notAfter as epoch seconds; +inf when ``der`` does not parse.

    Remembered from the login's certificate (:func:`remember_not_after`); a record written by
    another gateway is parsed once here. The DER comes from a gateway's own handshake, so it
    parses in practice; a record without a usable certificate is still bounded by grace, idle
    timeout and lifetime.
    """
    if not der:
        return math.inf
    hit = _NOT_AFTER.get(der)
    if hit is not None:
        return hit
    try:
        from cryptography import x509

        value = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
    except ValueError:
        value = math.inf
    _put(der, value)
    return value


def describe(rec: SessionRecord, settings: EndSettings, now: float) -> dict[str, Any]:
    """A JSON-ready view of ``rec`` for administrators (no certificate bytes; the id is a hash).

    ``state`` is ``live``, ``expired`` (its end passed but nobody marked it yet, e.g. the
    gateway was down) or ``ended``. Times are RFC 3339 UTC strings (``long_until`` None when
    the session is not trusted).
    """
    end, why = ends_at(rec, settings)
    state = "ended" if rec.ended is not None else ("expired" if now >= end else "live")
    return {"id": rec.id, "account": rec.account, "fingerprint": rec.fingerprint,
            "created_at": rfc3339(rec.created_at), "proved_at": rfc3339(rec.proved_at),
            "last_seen": rfc3339(rec.last_seen), "ends_at": rfc3339(end), "end_reason": rec.ended or why,
            "trusted": rec.long_until > 0, "long_until": rfc3339(rec.long_until) if rec.long_until > 0 else None,
            "methods": list(rec.methods), "client_ip": rec.client_ip, "state": state}


def fail(reason: str, record: SessionRecord | None = None, ended: str | None = None) -> SessionCheck:
    """A refusing :class:`SessionCheck`."""
    return SessionCheck(False, record, reason, ended)


def only_cookie(head: "RequestHead", name: str) -> str | None:
    """The value of cookie ``name`` if it appears exactly once across all Cookie headers.

    A repeated name (in one header or several) counts as absent: a planted duplicate must
    not win. Parsed by hand: ``SimpleCookie`` keeps the last of repeated names silently.
    """
    found: str | None = None
    prefix = name + "="
    for raw in head.get_all(b"cookie"):
        for part in raw.decode("latin-1").split(";"):
            part = part.strip()
            if part.startswith(prefix):
                if found is not None:
                    return None
                found = part[len(prefix):].strip('"')
    return found
