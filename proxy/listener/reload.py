"""The live trust/TLS state and its reloads (SIGHUP, file watch, ``certgate trust`` edits).

:class:`TrustState` holds one immutable :class:`TLSSnapshot`: the trust generation, the
server certificates, the hardened contexts built from both and their verify callback.
A reload builds a *complete new* snapshot first and installs it only when everything
loaded; on any failure the old snapshot stays, the reason (file and why) is logged, and
``healthy``/``last_error`` say so until a reload succeeds. New handshakes take the
current snapshot; existing connections keep the context they were made with.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from OpenSSL import SSL
from twisted.logger import Logger

from proxy.listener.context import (ServerIdentity, TLSConfigError, build_context, file_stats,
                                load_server_identity, parse_sni_entries, server_cert_warnings)
from proxy.listener.verify import HandshakeVerifier
from trust.folder import folder_signature
from trust.mapping import map_presented
from trust.presented import PresentedCertificate
from trust.store import PINNED_DIR, TrustStoreError, load_store
from trust.verify import VerdictCache, Verdict

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config
    from proxy.clock import Clock

Listener = Callable[[Any, Any], None]  # (old TrustGeneration, new TrustGeneration)


@dataclass(frozen=True, eq=False)
class TLSSnapshot:
    """Everything one handshake needs, built together and never mutated."""

    number: int
    generation: Any  # trust.store.TrustGeneration
    identity: ServerIdentity
    context: SSL.Context
    sni_contexts: Mapping[str, SSL.Context]
    verifier: HandshakeVerifier
    signature: tuple[Any, ...]
    built_at: float

    def context_for(self, server_name: str | None) -> SSL.Context | None:
        """The SNI context for ``server_name`` (exact, then ``*.parent``), or None."""
        if not server_name or not self.sni_contexts:
            return None
        name = server_name.lower().rstrip(".")
        ctx = self.sni_contexts.get(name)
        if ctx is None and "." in name:
            ctx = self.sni_contexts.get("*." + name.split(".", 1)[1])
        return ctx


class TrustState:
    """Current TrustGeneration + TLS contexts + verdict cache; reloads keep the old on failure.

    ``clock`` provides ``seconds()`` (the reactor, or ``Clock`` in tests). The constructor
    loads everything and raises (``TrustStoreError``/``TLSConfigError``) if it cannot: a
    gateway never starts without a usable trust store and server certificate.
    """

    def __init__(self, config: Config, clock: Clock, log: Logger | None = None,
                 verdicts: VerdictCache | None = None, ocsp: Any = None, directory: Any = None) -> None:
        self.config = config
        self.ocsp = ocsp  # proxy.listener.ocsp.OcspChecker shared by every snapshot (its cache survives reloads)
        self.directory = directory  # proxy.listener.directory.DirectoryMapper with mapping = ldap
        self.settings = config.trust
        self.clock = clock
        self.log = log or Logger(namespace="certgate.tls")
        self.verdicts = verdicts if verdicts is not None else VerdictCache()
        self.client_auth: str = config.listen.client_auth
        self.healthy = True
        self.last_error: str | None = None
        self.reload_count = 0
        self.failed_reloads = 0
        self._listeners: list[Listener] = []
        self._watched = self._watched_files()
        store = Path(self.settings.store)
        # Per-handshake check: plain strings, no pathlib work on the hot path.
        self._quick_paths = tuple(str(p) for p in (store, store / PINNED_DIR, *self._watched))
        self._pending_quick: tuple[Any, ...] = ()
        sig = self._signature()
        self._current = self._build(sig, 1)
        self._attempted = sig
        self._attempted_quick = self._pending_quick
        for w in server_cert_warnings(self._current.identity, self._now_dt()):
            self.log.warn("{warning}", warning=w)

    # -- reading
    @property
    def current(self) -> TLSSnapshot:
        return self._current

    @property
    def generation(self) -> Any:
        return self._current.generation

    @property
    def context(self) -> SSL.Context:
        return self._current.context

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(old_generation, new_generation)`` after every successful reload."""
        self._listeners.append(callback)

    def verify(self, leaf_der: bytes, chain_ders: Sequence[bytes], now: float) -> Verdict:
        """The trust verdict for a certificate (DER, e.g. a session's) under the *current* generation."""
        return self.verdict(PresentedCertificate(leaf_der, tuple(chain_ders)), now)

    def verdict(self, cert: PresentedCertificate, now: float) -> Verdict:
        """The trust verdict for a presented certificate under the *current* generation (cached)."""
        return self._current.verifier.verdict_for(cert, now)

    def still_valid(self, leaf_der: bytes, chain_ders: Sequence[bytes], now: float) -> bool:
        """:meth:`still_accepted` for a certificate given as DER (e.g. a session's)."""
        return self.still_accepted(PresentedCertificate(leaf_der, tuple(chain_ders)), now)

    def still_accepted(self, cert: PresentedCertificate, now: float) -> bool:
        """True when the certificate still verifies and maps to an account right now.

        With ``mapping = ldap`` "maps" means: no cached "no account" answer (the directory is
        not asked here; new connections ask it).
        """
        v = self.verdict(cert, now)
        if not v.ok:
            return False
        if self.directory is not None:
            # The directory is asked by every new connection; here only a cached refusal counts.
            hit = self.directory.peek(v.fingerprint)
            return hit is None or hit.account is not None
        m = self._current.verifier.mapping_for(v, cert)
        return m.account is not None

    def status(self) -> dict[str, Any]:
        """Health facts for the admin endpoint."""
        g = self._current.generation
        return {"healthy": self.healthy, "last_error": self.last_error, "reload_count": self.reload_count,
                "failed_reloads": self.failed_reloads, "generation": g.digest,
                "loaded_at": self._current.built_at, "cas": len(g.cas), "pinned": len(g.pinned),
                "crls": len(g.crls), "client_auth": self.client_auth}

    # -- reloading
    def quick_check(self) -> bool:
        """Per-handshake check: reload if the store folder or a watched file changed.

        Costs a handful of ``stat`` calls: the store folder and ``pinned/`` (whose mtime
        changes with every file added, removed or renamed into them, i.e. every
        ``certgate trust`` edit) and the certificate/key/map files. In-place edits of a
        store file are caught by :meth:`maybe_reload` (the timer). Never raises.
        """
        try:
            quick = self._quick_signature()
        except Exception:  # pragma: no cover
            return False
        if quick == self._attempted_quick:
            return False
        return self.maybe_reload()

    def maybe_reload(self) -> bool:
        """Reload when the store folder, a server certificate/key or the map file changed.

        Cheap (a few ``stat`` calls): compares a signature with the last *attempted* one,
        so a broken edit is reported once, not on every handshake. Never raises.
        """
        try:
            sig = self._signature()
        except Exception as exc:  # pragma: no cover - stat errors are folded into the signature
            self.log.error("cannot check the trust store for changes: {error}", error=str(exc))
            return False
        if sig == self._attempted:
            self._attempted_quick = self._pending_quick
            return False
        return self.reload("files changed")

    def reload(self, reason: str) -> bool:
        """Build a new snapshot and install it; True when installed. Never raises.

        On failure the previous snapshot stays in use, ``healthy`` becomes False and
        ``last_error`` names the file and the reason.
        """
        try:
            sig = self._signature()
        except Exception:  # pragma: no cover
            sig = ()
        self._attempted = sig
        self._attempted_quick = self._pending_quick
        old = self._current
        try:
            new = self._build(sig, old.number + 1)
        except Exception as exc:
            msg = describe_error(exc)
            self.healthy = False
            self.last_error = msg
            self.failed_reloads += 1
            self.log.error("reload ({reason}) failed; still serving trust generation {digest} and the "
                           "previous server certificate: {error}", reason=reason,
                           digest=old.generation.digest[:16], error=msg)
            return False
        self._current = new
        self.healthy = True
        self.last_error = None
        self.reload_count += 1
        g = new.generation
        self.log.info("reload ({reason}): trust generation {digest} with {cas} CA(s), {pinned} pinned, {crls} "
                      "CRL(s) now used for new handshakes", reason=reason, digest=g.digest[:16],
                      cas=len(g.cas), pinned=len(g.pinned), crls=len(g.crls))
        for w in server_cert_warnings(new.identity, self._now_dt()):
            self.log.warn("{warning}", warning=w)
        for cb in list(self._listeners):
            try:
                cb(old.generation, g)
            except Exception:
                self.log.failure("reload listener {cb!r} failed", cb=cb)
        return True

    # -- internals
    def _now_dt(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.clock.seconds(), _dt.timezone.utc)

    def _watched_files(self) -> tuple[Path, ...]:
        listen = self.config.listen
        files: list[Path] = [p for p in (listen.certificate, listen.key) if p is not None]
        try:
            for _, cp, kp in parse_sni_entries(listen.sni_certificates,
                                               self.config.base_dir):
                files += [cp, kp]
        except TLSConfigError:
            pass  # reported by the build
        map_file = self.settings.mapping.map_file
        if map_file is not None:
            files.append(Path(map_file))
        return tuple(files)

    def _signature(self) -> tuple[Any, ...]:
        self._pending_quick = self._quick_signature()
        return (folder_signature(self.settings.store), file_stats(self._watched))

    def _quick_signature(self) -> tuple[Any, ...]:
        out: list[Any] = []
        stat = os.stat
        for p in self._quick_paths:
            try:
                st = stat(p)
                out.append((st.st_size, st.st_mtime_ns, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def _build(self, sig: tuple[Any, ...], number: int) -> TLSSnapshot:
        now = self.clock.seconds()
        errors: list[BaseException] = []
        generation: Any = None
        identity: Any = None
        try:
            generation = load_store(self.settings.store, now=_dt.datetime.fromtimestamp(now, _dt.timezone.utc),
                                    min_rsa_bits=self.settings.min_rsa_bits)
        except Exception as exc:
            errors.append(exc)
        try:
            identity = load_server_identity(self.config)
        except Exception as exc:
            errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ReloadError(errors)
        mapping = self.settings.mapping
        verifier = HandshakeVerifier(generation=generation, policy=self.settings.policy, verdicts=self.verdicts,
                                     mapper=lambda cert: map_presented(cert, mapping),
                                     client_auth=self.client_auth, clock=self.clock, log=self.log,
                                     ocsp=self.ocsp, directory=self.directory)
        # A fresh session-id context per snapshot: no session can cross a reload.
        session_id = os.urandom(16).hex().encode()
        min_version = str(self.config.listen.tls_min_version)
        cas = tuple(generation.client_ca_certs)
        callback = verifier if self.client_auth != "none" else None

        def ctx(server: Any, sni_cb: Any = None) -> SSL.Context:
            return build_context(server, client_auth=self.client_auth, client_cas=cas, min_version=min_version,
                                 verify_callback=callback, session_id=session_id, servername_callback=sni_cb)

        sni = {name: ctx(sc) for name, sc in identity.sni.items()}
        holder: list[TLSSnapshot] = []

        def on_servername(conn: SSL.Connection) -> None:
            name = conn.get_servername()
            chosen = holder[0].context_for(name.decode("ascii", "replace") if name else None)
            if chosen is not None:
                conn.set_context(chosen)

        default = ctx(identity.default, on_servername if sni else None)
        snap = TLSSnapshot(number=number, generation=generation, identity=identity, context=default,
                           sni_contexts=sni, verifier=verifier, signature=sig, built_at=now)
        holder.append(snap)
        return snap


class ReloadError(Exception):
    """Several parts failed to load (trust store and server certificate); ``errors`` has each."""

    def __init__(self, errors: Sequence[BaseException]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(describe_error(e) for e in self.errors))


def describe_error(exc: BaseException) -> str:
    """An operator-readable reason for a failed load: which file and why."""
    if isinstance(exc, ReloadError):
        return str(exc)
    if isinstance(exc, TrustStoreError):
        return "trust store: " + "; ".join(str(p) for p in exc.problems)
    if isinstance(exc, TLSConfigError):
        return f"server certificate: {exc}"
    if isinstance(exc, SSL.Error):
        return f"OpenSSL refused the server certificate or key: {exc}"
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
