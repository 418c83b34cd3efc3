"""The blocking directory client behind ``mapping = ldap``: ldap3 connections in a small pool.

Every call blocks; :mod:`proxy.listener.directory` runs it in a thread pool, never on the reactor.
Why ldap3 and not a Twisted-native client: ldap3 is the widely used pure-Python LDAP v3
client with documented certificate verification (``Tls(validate=CERT_REQUIRED)``, host
name checked), StartTLS, connect and receive timeouts and raw attribute values; the
Twisted-native ldaptor is less used and would need its own TLS and timeout plumbing. A
blocking client in a bounded pool of threads, each call bounded by ``timeout``, keeps the
reactor free.

Guarantees: each connection is TLS (ldaps:// or StartTLS before the bind) verified against
``ca_file`` (or the system store) unless ``unsafe_plaintext``; a connection that failed in
any way is discarded, never reused; at most ``pool_size`` connections exist. Does not
interpret entries (:mod:`trust.directory` does).
"""

from __future__ import annotations

import math
import queue
import ssl
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence
from urllib.parse import urlsplit

from trust.directory import MAX_ENTRIES, DirectoryEntry, DirectoryQuery

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import LdapSection

# ldap3 result codes: success, sizeLimitExceeded, timeLimitExceeded.
_SUCCESS, _SIZE_LIMIT = 0, 4


class DirectoryError(Exception):
    """The directory could not be asked or did not answer properly (the lookup fails closed)."""


class LdapClient:
    """Blocking searches through up to ``pool_size`` reusable, bound ldap3 connections.

    ``settings`` is the ``[ldap]`` section (attribute access). Thread-safe.
    """

    def __init__(self, settings: LdapSection) -> None:
        self.settings = settings
        parts = urlsplit(str(settings.url))
        self.host = parts.hostname or ""
        self.use_ssl = parts.scheme == "ldaps"
        self.port = parts.port or (636 if self.use_ssl else 389)
        self.timeout = float(settings.timeout)  # ldap3 takes whole seconds for reads: rounded up
        self._idle: "queue.LifoQueue[Any]" = queue.LifoQueue()
        self._lock = threading.Lock()
        self.opened = 0  # connections opened (bound) so far
        self.searches = 0  # searches sent to the directory

    # -- connections
    def _password(self) -> str | None:
        path = self.settings.bind_password_file
        if not self.settings.bind_dn:
            return None
        if path is None:
            raise DirectoryError("bind_dn is set but bind_password_file is not")
        try:
            return Path(path).read_text("utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise DirectoryError(f"cannot read the bind password from {path}: {exc}") from None

    def _tls(self) -> Any:
        import ldap3

        ca = self.settings.ca_file
        return ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                         ca_certs_file=str(ca) if ca else None)

    def _open(self) -> Any:
        import ldap3

        s = self.settings
        plaintext = not self.use_ssl and not s.starttls
        tls = None if plaintext else self._tls()
        server = ldap3.Server(self.host, port=self.port, use_ssl=self.use_ssl, tls=tls,
                              connect_timeout=self.timeout, get_info=ldap3.NONE)
        password = self._password()
        conn = ldap3.Connection(server, user=s.bind_dn or None, password=password, auto_bind=ldap3.AUTO_BIND_NONE,
                                read_only=True, receive_timeout=max(1, math.ceil(self.timeout)), raise_exceptions=False,
                                auto_referrals=False, check_names=False)
        with _closed_on_failure(conn, s.url):
            conn.open(read_server_info=False)  # raises LDAPException when it cannot connect
            if s.starttls and not conn.start_tls():
                raise DirectoryError(f"StartTLS with {s.url} failed: {_describe(conn.result)}")
            if not conn.bind():
                raise DirectoryError(f"bind to {s.url} as {s.bind_dn or '(anonymous)'} failed: "
                                     f"{_describe(conn.result)}")
        with self._lock:
            self.opened += 1
        return conn

    def _take(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._open()

    def close(self) -> None:
        """Unbind every idle connection."""
        while True:
            try:
                _close(self._idle.get_nowait())
            except queue.Empty:
                return

    # -- searching
    def search(self, query: DirectoryQuery) -> tuple[list[DirectoryEntry], bool]:
        """``(entries, truncated)`` for ``query`` under ``base_dn``; blocks up to about ``timeout``
        per step. Raises :class:`DirectoryError` when the directory cannot answer."""
        import ldap3

        s = self.settings
        conn = self._take()
        scope = ldap3.SUBTREE if s.scope == "sub" else ldap3.LEVEL
        with _closed_on_failure(conn, s.url):
            with self._lock:
                self.searches += 1
            conn.search(str(s.base_dn), query.filter, search_scope=scope, attributes=list(query.attributes),
                        size_limit=MAX_ENTRIES + 1, time_limit=max(1, int(self.timeout + 0.999)))
            result = conn.result or {}
            code = result.get("result")
            if code not in (_SUCCESS, _SIZE_LIMIT):
                raise DirectoryError(f"search under {s.base_dn} failed: {_describe(result)}")
            entries = _entries(conn.response or ())
        if self._idle.qsize() < int(s.pool_size):
            self._idle.put(conn)
        else:
            _close(conn)
        return entries[:MAX_ENTRIES + 1], code == _SIZE_LIMIT or len(entries) > MAX_ENTRIES


def _entries(response: Sequence[dict[str, Any]]) -> list[DirectoryEntry]:
    out = []
    for item in response:
        if item.get("type") != "searchResEntry":
            continue  # referrals (searchResRef) are not followed
        raw = item.get("raw_attributes") or {}
        attrs = {str(k).lower(): [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in vals]
                 for k, vals in raw.items()}
        out.append(DirectoryEntry(dn=str(item.get("dn", "")), attributes=attrs))
    return out


def _describe(result: Any) -> str:
    if not isinstance(result, dict):
        return str(result)
    msg = result.get("message") or ""
    return f"{result.get('description', '?')} ({result.get('result', '?')})" + (f": {msg}" if msg else "")


def _close(conn: Any) -> None:
    try:
        conn.unbind()
    except Exception:
        pass


@contextmanager
def _closed_on_failure(conn: Any, url: str) -> Iterator[None]:
    """Close ``conn`` and raise :class:`DirectoryError` (one line naming ``url``) when the body fails
    with an LDAP, socket or TLS error; a :class:`DirectoryError` passes through after the close."""
    from ldap3.core.exceptions import LDAPException

    try:
        yield
    except DirectoryError:
        _close(conn)
        raise
    except LDAPException as exc:
        _close(conn)
        raise DirectoryError(f"{url}: {type(exc).__name__}: {exc}") from None
    except (OSError, ssl.SSLError) as exc:
        _close(conn)
        raise DirectoryError(f"{url}: {exc}") from None
