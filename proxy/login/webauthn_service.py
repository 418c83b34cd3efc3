"""The ``webauthn`` factor as the login service uses it: options, checks, enrolment, audit.

One :class:`WebAuthnFactor` per gateway: :class:`proxy.login.webauthn.Ceremonies` for the
relying party of ``[webauthn]``, the credentials file and the session store (single use of
challenges and forward-only counters, :mod:`proxy.login.webauthn_state`). A login's new
counter and time of use are written to the credentials file in a thread when one is given
(a locked, fsynced rewrite must not hold the reactor), and audited if that fails. Every
change of the credentials and every refused ceremony is audited (event ``webauthn``);
credential names are printable text only (:func:`proxy.login.webauthn_creds.clean_name`) and
JSON-escaped by the audit writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import inlineCallbacks

from proxy.login.keys import derive_key
from proxy.login.webauthn import Ceremonies, CounterRegression, StoredCredential, WebAuthnError, user_handle
from proxy.login.webauthn_creds import CredentialFile, CredentialFileError, clean_name
from proxy.login.webauthn_state import advance_counter, consume

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config
    from proxy.interfaces import AuditSink, SessionStore


class WebAuthnFactor:
    def __init__(self, *, config: Config, secret: bytes, store: SessionStore, audit: AuditSink, base_dir: Path,
                 defer_to_thread: Callable[..., Any] | None = None) -> None:
        w = config.webauthn
        self._key = derive_key(secret, "webauthn")
        self.ceremonies = Ceremonies(self._key, rp_id=str(w.rp_id).strip().lower(), origin=str(w.origin).strip(),
                                     rp_name=str(w.rp_name), lifetime=float(w.challenge_lifetime))
        if w.credentials is None:
            raise ValueError("[webauthn] credentials: is required when a rule names webauthn")
        path = Path(w.credentials)
        self.creds = CredentialFile(path if path.is_absolute() else base_dir / path)
        self.store = store
        self.audit = audit
        self._uv_default = str(w.user_verification)
        self._uv = dict(config.account_uv)
        self._defer_to_thread = defer_to_thread

    def uv(self, account: str) -> str:
        """``preferred`` or ``required`` for ``account``."""
        return self._uv.get(account, self._uv_default)

    def enrolled(self, account: str) -> bool:
        """True when ``account`` has a key; True too when the file cannot be read (fails closed)."""
        try:
            return self.creds.enrolled(account)
        except CredentialFileError:
            return True

    def credentials(self, account: str) -> list[StoredCredential]:
        try:
            return self.creds.credentials(account)
        except CredentialFileError:
            return []

    # ------------------------------------------------------------------ login

    def login_options(self, account: str, fingerprint: str | None, now: float) -> dict[str, Any] | None:
        """Request options for ``account``'s keys, bound to ``fingerprint``; None without keys."""
        creds = self.credentials(account)
        if not creds or not fingerprint:
            return None
        opts, _ = self.ceremonies.authentication_options(account=account, fingerprint=fingerprint,
                                                         credentials=[c.id for c in creds], uv=self.uv(account),
                                                         now=now)
        return opts

    @inlineCallbacks
    def check(self, account: str, fingerprint: str | None, response: str, now: float,
              audit_extra: dict[str, Any]) -> Any:
        """A Deferred firing '' when ``response`` proves the factor (challenge consumed, counter
        stored), else the reason code. A counter regression is audited on its own line before the
        refusal. Store failures (StoreError) are the Deferred's failure."""
        try:
            creds = self.creds.credentials(account)
        except CredentialFileError:
            return "webauthn-unavailable"
        if not creds:
            return "webauthn-not-enrolled"
        try:
            a, ch = self.ceremonies.verify_assertion(response, account=account, fingerprint=fingerprint,
                                                     credentials=creds, uv=self.uv(account), now=now)
            yield consume(self.store, ch)
        except CounterRegression as e:
            try:  # a used challenge is the plainer cause (a replayed assertion repeats its counter)
                if e.challenge is not None:
                    yield consume(self.store, e.challenge)
            except WebAuthnError as used:
                return used.reason
            self._regression(account, e.credential_id, e.stored, e.received, audit_extra)
            return e.reason
        except WebAuthnError as e:
            audit_extra["detail"] = e.detail[:200] or None
            return e.reason
        stored = next(c.sign_count for c in creds if c.id == a.credential_id)
        if (stored or a.new_sign_count) and not (yield advance_counter(self.store, a.credential_id,
                                                                        a.new_sign_count)):
            # another login (another worker or gateway) already presented this count or a later one
            self._regression(account, a.credential_id, stored, a.new_sign_count, audit_extra)
            return "webauthn-counter-regression"
        self._write_use(account, a.credential_id, a.new_sign_count, now)
        audit_extra["credential"] = a.credential_id[:16]
        return ""

    def _write_use(self, account: str, cid: str, count: int, now: float) -> None:
        """The new counter and last use into the credentials file (in a thread when possible)."""
        def write() -> None:
            self.creds.record_use(account, cid, count, now)  # forward only, under the file's lock

        def failed(f: Any) -> None:
            self.audit.record("webauthn", "error", "credentials-write-failed", account=account, credential=cid[:16],
                              detail=str(f.value)[:200])

        if self._defer_to_thread is None:
            try:
                write()
            except (CredentialFileError, KeyError, OSError) as e:
                self.audit.record("webauthn", "error", "credentials-write-failed", account=account,
                                  credential=cid[:16], detail=str(e)[:200])
            return
        self._defer_to_thread(write).addErrback(failed)

    def _regression(self, account: str, cid: str, stored: int, received: int, extra: dict[str, Any]) -> None:
        self.audit.record("webauthn", "deny", "counter-regression", account=account, credential=cid[:16],
                          stored_count=stored, received_count=received, **{k: v for k, v in extra.items()
                                                                             if k in ("fingerprint", "client_ip")})

    # ------------------------------------------------------------------ enrolment

    def registration_options(self, account: str, fingerprint: str, now: float) -> dict[str, Any]:
        existing = [c.id for c in self.credentials(account)]
        opts, _ = self.ceremonies.registration_options(account=account, fingerprint=fingerprint,
                                                       user_handle=user_handle(self._key, account),
                                                       existing=existing, uv=self.uv(account), now=now)
        return opts

    @inlineCallbacks
    def register(self, account: str, fingerprint: str | None, response: str, name: object, now: float,
                 who: dict[str, Any]) -> Any:
        """Verify a registration (on the calling thread: CPU; then one store operation) and store
        the key as ``name`` (the file write in a thread when one was given). A Deferred firing
        with the StoredCredential; its failure is WebAuthnError (reason, detail) when refused.
        Audited either way."""
        try:
            try:
                clean = clean_name(name)
            except ValueError as bad:
                raise WebAuthnError("webauthn-bad-name", str(bad)) from None
            new, ch = self.ceremonies.verify_registration(response, account=account, fingerprint=fingerprint,
                                                          uv=self.uv(account), now=now)
            yield consume(self.store, ch)
        except WebAuthnError as e:
            self.audit.record("webauthn", "deny", e.reason, account=account, detail=e.detail[:200] or None, **who)
            raise
        cred = StoredCredential(new.id, new.public_key, new.sign_count, clean, now, None, new.user_verified)

        @inlineCallbacks
        def stored(_: Any) -> Any:
            if cred.sign_count:
                yield advance_counter(self.store, cred.id, cred.sign_count)
            self.audit.record("webauthn", "add", "enrolled", account=account, credential=cred.id[:16], name=clean,
                              user_verified=cred.user_verified, **who)
            return cred

        def failed(e: Exception) -> WebAuthnError:
            self.audit.record("webauthn", "deny", "webauthn-store-failed", account=account, detail=str(e)[:200], **who)
            return WebAuthnError("webauthn-store-failed", str(e))

        if self._defer_to_thread is None:
            try:
                self.creds.add(account, cred)
            except (CredentialFileError, OSError) as e:
                raise failed(e) from None
            return (yield stored(None))

        def on_error(f: Any) -> Any:
            f.trap(CredentialFileError, OSError)
            raise failed(f.value)

        d = self._defer_to_thread(self.creds.add, account, cred)
        d.addCallbacks(stored, on_error)
        return (yield d)
