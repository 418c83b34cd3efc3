"""The webauthn factor's state in the session store: the only module that touches the store for it.

Two operations, both atomic in every store (memory, SQLite, Redis) and so shared by the
workers and gateways of one store:

- :func:`consume`: a challenge is used once (``consume_once("webauthn", jti, expires_at)``);
- :func:`advance_counter`: a key's signature counter only moves forward, a compare-and-set on
  the store's forward-only step (``use_totp_step``) under a name no account can have (accounts
  are printable ASCII, :mod:`trust.mapping`; this name starts with a control character).

The credentials file keeps the counter too (for display and as a first check); the store's
compare-and-set decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import inlineCallbacks

from proxy.login.webauthn import Challenge, WebAuthnError

if TYPE_CHECKING:  # pragma: no cover
    from typing import Generator
    from twisted.internet.defer import Deferred
    from proxy.interfaces import SessionStore

_COUNTER = "\x1dwebauthn-counter:"


@inlineCallbacks
def consume(store: SessionStore, ch: Challenge) -> Generator[Deferred[Any], Any, None]:
    """Mark ``ch`` used (a Deferred); it fails with WebAuthnError("webauthn-replay") when it already was."""
    fresh = yield store.consume_once("webauthn", ch.jti, ch.expires_at)
    if not fresh:
        raise WebAuthnError("webauthn-replay", "this challenge was already used")


def advance_counter(store: SessionStore, credential_id: str, count: int) -> Deferred[bool]:
    """A Deferred firing True (and ``count`` remembered) only when ``count`` is greater than every
    count this credential presented before."""
    return store.use_totp_step(_COUNTER + credential_id, int(count)).addCallback(bool)
