"""Pending Cockpit X-Conversation prompts kept in the shared session store.

Cockpit's login page answers the TOTP prompt on a new request, which a load balancer may
send to another worker or gateway. The pending conversation (account, certificate
fingerprint, receipt, the Basic password in ``basic`` mode, ``X-Superuser``) is therefore
stashed in the store under its nonce, sealed with Fernet (a key derived from ``[login]
secret_key``, which gateways sharing a store share anyway), and taken exactly once by
whichever process receives the answer (``unstash`` is atomic). It expires with
``response_timeout``.

Bounds: each process admits at most ``limit`` conversations it started that are still
pending, and one certificate at most ``per_certificate`` of them (its oldest is dropped),
as the per-process table did. What is *not* bounded across processes: the sum over all
processes (each is bounded; the store forgets every entry at its expiry).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from cryptography.fernet import Fernet, InvalidToken
from twisted.internet.defer import inlineCallbacks

if TYPE_CHECKING:  # pragma: no cover
    from proxy.interfaces import SessionStore

NAMESPACE = "cockpit-conversation"
#: Pending conversations one process admits.
MAX_CONVERSATIONS = 1024
#: Pending conversations one certificate may hold (a new one drops its oldest).
PER_CERTIFICATE = 3


@dataclass(frozen=True, slots=True)
class Conversation:
    """A pending X-Conversation: who asked, and what is already proven (the receipt)."""

    nonce: str
    account: str
    fingerprint: str
    receipt: str | None
    password: str | None  # basic mode only: the credentials cockpit-ws will need after the code
    superuser: bytes | None
    expires_at: float


class Conversations:
    """Pending conversations by nonce; each is taken once, before ``expires_at``; at most ``limit``."""

    def __init__(self, now: Callable[[], float], limit: int = MAX_CONVERSATIONS) -> None:
        self._now = now
        self._limit = limit
        self._items: dict[str, Conversation] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, conv: Conversation) -> bool:
        """Store ``conv``; False (not stored) when ``limit`` live conversations are pending.

        One certificate keeps at most :data:`PER_CERTIFICATE` pending conversations (its oldest
        is dropped), so one person cannot fill the table for everyone.
        """
        self.purge()
        mine = [k for k, c in self._items.items() if c.fingerprint == conv.fingerprint]
        for k in mine[:max(0, len(mine) - PER_CERTIFICATE + 1)]:
            del self._items[k]
        if len(self._items) >= self._limit:
            return False
        self._items[conv.nonce] = conv
        return True

    def take(self, nonce: str) -> Conversation | None:
        """The conversation for ``nonce`` if live, removing it (single use); else None."""
        conv = self._items.pop(nonce, None)
        if conv is None or self._now() >= conv.expires_at:
            return None
        return conv

    def purge(self) -> None:
        now = self._now()
        for k in [k for k, c in self._items.items() if now >= c.expires_at]:
            del self._items[k]




class SharedConversations:
    """``add(conv)`` / ``take(nonce)`` (Deferreds) over an asynchronous store; see the module docstring."""

    def __init__(self, store: SessionStore, key: bytes, now: Callable[[], float], *, limit: int,
                 per_certificate: int) -> None:
        self._store = store
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._now = now
        self._limit = limit
        self._per_cert = per_certificate
        self._mine: dict[str, tuple[str, float]] = {}  # nonce -> (fingerprint, expires_at), started here

    def __len__(self) -> int:
        self._purge()
        return len(self._mine)

    def _purge(self) -> None:
        now = self._now()
        for k in [k for k, (_, exp) in self._mine.items() if now >= exp]:
            del self._mine[k]

    def _seal(self, conv: "Conversation") -> str:
        d = {"nonce": conv.nonce, "account": conv.account, "fingerprint": conv.fingerprint, "receipt": conv.receipt,
             "password": conv.password, "expires_at": conv.expires_at,
             "superuser": None if conv.superuser is None else base64.b64encode(conv.superuser).decode("ascii")}
        return self._fernet.encrypt(json.dumps(d).encode("utf-8")).decode("ascii")

    def _open(self, nonce: str, text: str) -> "Conversation | None":
        try:
            d = json.loads(self._fernet.decrypt(text.encode("ascii")))
        except (InvalidToken, ValueError):
            return None
        if d.get("nonce") != nonce:  # sealed for another nonce: never accepted
            return None
        su = d["superuser"]
        return Conversation(nonce=nonce, account=d["account"], fingerprint=d["fingerprint"], receipt=d["receipt"],
                            password=d["password"], superuser=None if su is None else base64.b64decode(su),
                            expires_at=float(d["expires_at"]))

    @inlineCallbacks
    def add(self, conv: "Conversation") -> Any:
        """Stash ``conv``; a Deferred: False (not stored) when this process has ``limit`` pending."""
        self._purge()
        mine = [k for k, (fp, _) in self._mine.items() if fp == conv.fingerprint]
        for k in mine[:max(0, len(mine) - self._per_cert + 1)]:
            del self._mine[k]
            yield self._store.unstash(NAMESPACE, k, self._now())
        if len(self._mine) >= self._limit:
            return False
        yield self._store.stash(NAMESPACE, conv.nonce, self._seal(conv), conv.expires_at)
        self._mine[conv.nonce] = (conv.fingerprint, conv.expires_at)
        return True

    @inlineCallbacks
    def take(self, nonce: str) -> Any:
        """The live conversation for ``nonce`` (from any process), removed; else None. A Deferred."""
        self._mine.pop(nonce, None)
        if not nonce or len(nonce) > 200:
            return None
        text = yield self._store.unstash(NAMESPACE, nonce, self._now())
        if text is None:
            return None
        conv = self._open(nonce, text)
        if conv is None or self._now() >= conv.expires_at:
            return None
        return conv
