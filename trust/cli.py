"""``certgate trust …``: list, add, remove, show, verify, import-p12 and map.

``main(argv)`` takes the arguments after the word ``trust`` and returns the exit status:
0 on success (``verify``: only when the certificate is accepted and maps to an account;
``map``: only when it maps), 1 when that answer is no. A refusal raises
:class:`~trust.cli_errors.OperatorError` (status 2: a bad argument or file, a store or config
that will not load, an unknown entry, an edit the store refuses) or
:class:`~trust.cli_errors.RuntimeFailure` (status 1: the disk failed during a write); the
``certgate`` dispatcher prints it as one line.
Every write is validated against the whole resulting store first, then applied with
atomic renames, so a running gateway never sees a half-written or broken store.
"""

from __future__ import annotations

import argparse
import configparser
import datetime as _dt
import getpass
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from . import certinfo
from .cli_errors import CommandError, OperatorError, Parser, config_problems, joined, os_error, run_command
from .edits import EditError, Plan, find_entries, plan_add, plan_pin, plan_remove, read_certificates
from .mapping import MappingResult, MappingSettings, account_matches, describe, map_account
from .settings import TrustSettings, parse_trust_section
from .folder import apply_changes
from .store import StoreEntry, TrustGeneration, TrustStoreError, entry_warnings, load_store
from .verify import verify


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    src = common.add_mutually_exclusive_group()
    src.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS, help="trust store folder")
    src.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                     help="certgate config; uses its [trust] section (store relative to the file)")
    p = Parser(prog="certgate trust", parents=[common],
                                description="Inspect and edit the certgate trust store.")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    sub.add_parser("list", parents=[common], help="list CAs, pinned certificates and CRLs")
    a = sub.add_parser("add", parents=[common], help="add CA certificates / a CRL (or pin a client cert)")
    a.add_argument("file", metavar="FILE")
    a.add_argument("--pin", action="store_true", help="pin FILE's (first) certificate as a client certificate")
    a.add_argument("--name", help="file name to use in the store")
    r = sub.add_parser("remove", parents=[common], help="remove a store file by fingerprint or name")
    r.add_argument("target", metavar="FINGERPRINT-or-NAME")
    r.add_argument("--force", action="store_true", help="remove even the last CA (every client is then refused)")
    s = sub.add_parser("show", parents=[common], help="show one entry in detail")
    s.add_argument("target", metavar="FINGERPRINT-or-NAME")
    v = sub.add_parser("verify", parents=[common], help="verify a client certificate against the store")
    v.add_argument("cert", metavar="CERT", help="PEM/DER file: the client certificate, then its chain")
    v.add_argument("--chain", metavar="FILE", help="more intermediate certificates")
    i = sub.add_parser("import-p12", parents=[common], help="import CA certificates (or pin) from a PKCS#12 file")
    i.add_argument("file", metavar="FILE")
    pw = i.add_mutually_exclusive_group()
    pw.add_argument("--password-file", metavar="F", help="read the password from the first line of F")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    i.add_argument("--pin", action="store_true", help="pin the PKCS#12 client certificate instead")
    m = sub.add_parser("map", parents=[common], help="show which account a certificate maps to")
    m.add_argument("cert", metavar="CERT")
    m.add_argument("--rule", choices=("cn", "san-email", "san-upn", "regex", "file", "ldap"),
                   help="override the rule")
    m.add_argument("--regex", help="mapping regex (with --rule regex)")
    m.add_argument("--map-file", help="map file (with --rule file)")
    m.add_argument("--strip-domain", action="store_true", help="strip DOMAIN\\ and @domain from --account")
    m.add_argument("--account", help="also check a login with this account name")
    return p


#: ``(config_path, certificate) -> (lines, MappingResult)``: asks the directory for
#: ``mapping = ldap`` (installed by the ``certgate`` console script; trust/ does no LDAP I/O).
DirectoryDescriber = Callable[[Path, x509.Certificate], "tuple[list[str], MappingResult]"]
_directory: DirectoryDescriber | None = None


def main(argv: Sequence[str] | None = None, directory: DirectoryDescriber | None = None) -> int:
    """Run one ``certgate trust`` command; returns the exit status (0, or 1 for a "no" answer).

    Raises :class:`~trust.cli_errors.CommandError` (a usage error too) for the dispatcher to
    print. ``directory`` answers ``map`` when the config says ``mapping = ldap``.
    """
    global _directory
    _directory = directory
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: --help
        return int(exc.code or 0)
    handlers = {"list": _list, "add": _add, "remove": _remove, "show": _show, "verify": _verify,
                "import-p12": _import_p12, "map": _map}
    try:
        return handlers[args.verb](args)
    except EditError as exc:  # the edit is refused: the message says what and why
        where = getattr(args, "file", None) or getattr(args, "cert", None) or getattr(args, "store", None) \
            or getattr(args, "config", None)
        named = str(where) in str(exc).split(": ", 1)[0] if where else True  # the message names its file
        err: CommandError = OperatorError(str(exc), None if named else where)
    except CommandError as exc:
        err = exc
    err.verb = args.verb
    raise err


# --------------------------------------------------------------------------- context


def _settings(args: argparse.Namespace, need_store: bool = True) -> TrustSettings:
    store = getattr(args, "store", None)
    config = getattr(args, "config", None)
    if store:
        return TrustSettings(store=Path(store))
    if config:
        path = Path(config)
        # Same dialect as the gateway's config parser (proxy/config.py).
        cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"), strict=True,
                                       empty_lines_in_values=False)
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            with open(path, encoding="utf-8") as fh:
                cp.read_file(fh)
        except OSError as exc:
            raise OperatorError("cannot read config", path, exc.strerror) from None
        except configparser.Error as exc:
            raise OperatorError("config cannot be parsed", path, str(exc)) from None
        if not cp.has_section("trust"):
            raise OperatorError("config has no [trust] section", path)
        settings, problems = parse_trust_section(dict(cp.items("trust")), path.resolve().parent)
        if problems:
            raise config_problems(path, problems)
        return settings
    if need_store:
        raise OperatorError("no trust store given", why="use --store DIR or --config FILE")
    return TrustSettings(store=Path("."))


def _load(settings: TrustSettings, now: _dt.datetime) -> TrustGeneration:
    try:
        return load_store(settings.store, now=now, min_rsa_bits=settings.min_rsa_bits)
    except TrustStoreError as exc:
        raise OperatorError("the trust store cannot be loaded", settings.store, joined(exc.problems)) from None


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OperatorError("cannot read", path, exc.strerror) from None


def _commit(settings: TrustSettings, plan: Plan, now: _dt.datetime) -> int:
    """Validate the store as it would be after ``plan``; write only if it loads."""
    try:
        load_store(settings.store, now=now, min_rsa_bits=settings.min_rsa_bits, changes=plan.changes)
    except TrustStoreError as exc:
        raise OperatorError("refused, the store would not load after this change (nothing was written)",
                            settings.store, joined(exc.problems)) from None
    try:
        apply_changes(settings.store, plan.changes)
    except OSError as exc:  # permissions: the operator's; a full disk, an I/O error: a runtime failure
        failed = os_error(exc)
        raise type(failed)("writing failed", settings.store, exc.strerror or str(exc)) from None
    for line in plan.messages:
        print(line)
    return 0


# --------------------------------------------------------------------------- verbs


def _list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    now = _utcnow()
    gen = _load(settings, now)
    print(f"trust store {settings.store}: {len(gen.cas)} CA, {len(gen.pinned)} pinned, {len(gen.crls)} CRL "
          f"(digest {gen.digest[:16]})")
    if not gen.entries:
        print("(empty: add a CA with `certgate trust add FILE` or pin a client certificate with --pin)")
    if gen.entries:
        print(f"{'KIND':<6} {'FILE':<28} {'NOT-AFTER':<10} {'DAYS':>5}  {'SHA-256':<64}  SUBJECT")
    for e in gen.entries:
        na = f"{e.not_after:%Y-%m-%d}" if e.not_after else "-"
        days = e.days_left(now)
        warn = entry_warnings(e, now, settings.expiry_warning_days)
        subject = e.subject if e.kind != "CRL" else f"CRL of {e.issuer}, {e.revoked} revoked"
        print(f"{e.kind:<6} {e.file:<28} {na:<10} {('%5d' % days) if days is not None else '    -'}  "
              f"{e.fingerprint}  {certinfo.printable_repr(subject)}")
        for w in warn:
            print(f"       ! {w}")
    for f, why in gen.ignored:
        print(f"ignored {f}: {why}")
    server = _server_certificate(args)
    if server is not None:
        path, cert = server
        left = cert.not_valid_after_utc - now
        days = int(left.total_seconds() // 86400)
        print(f"server certificate {path}: not after {cert.not_valid_after_utc:%Y-%m-%d}, {days} day(s), "
              f"sha256 {certinfo.fingerprint(cert)}")
        if left.total_seconds() < 0:
            print("       ! expired")
        elif days <= settings.expiry_warning_days:
            print(f"       ! expires in {days} day{'s' if days != 1 else ''}")
    return 0


def _server_certificate(args: argparse.Namespace) -> tuple[Path, Any] | None:
    """The leaf of ``[listen] certificate`` when ``--config`` names a config that sets it (else None)."""
    config = getattr(args, "config", None)
    if not config:
        return None
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"), strict=False)
    try:
        with open(config, encoding="utf-8") as fh:
            cp.read_file(fh)
        raw = cp.get("listen", "certificate", fallback="").strip()
    except (OSError, configparser.Error):
        return None
    if not raw:
        return None
    path = Path(raw) if Path(raw).is_absolute() else Path(config).resolve().parent / raw
    try:
        from cryptography import x509

        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        print(f"server certificate {path}: cannot be read ({getattr(exc, 'strerror', None) or exc})")
        return None
    return path, certs[0]


def _add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    now = _utcnow()
    gen = _load(settings, now)
    certs, crls = read_certificates(_read(args.file), args.file)
    if args.pin:
        if not certs or crls:
            raise OperatorError("--pin needs a certificate file", args.file,
                                f"found {len(certs)} certificate(s), {len(crls)} CRL(s)")
        plan = plan_pin(certs[0], gen, now, min_rsa_bits=settings.min_rsa_bits,
                        allow_missing_eku=settings.unsafe_allow_missing_eku, name=args.name)
        if len(certs) > 1:
            plan.messages.append(f"note: the {len(certs) - 1} other certificate(s) in {args.file} were not added")
    else:
        plan = plan_add(certs, crls, gen, now, min_rsa_bits=settings.min_rsa_bits, name=args.name)
    return _commit(settings, plan, now)


def _remove(args: argparse.Namespace) -> int:
    settings = _settings(args)
    now = _utcnow()
    try:
        gen = load_store(settings.store, now=now, min_rsa_bits=settings.min_rsa_bits)
    except TrustStoreError as exc:
        # A broken store can still be repaired by removing a file by name.
        target = args.target.strip()
        if target and not target.startswith(".") and ".." not in target and (settings.store / target).is_file():
            return _commit(settings, Plan({target: None}, [f"removed {target}"]), now)
        raise OperatorError("the trust store cannot be loaded (remove a broken file by name)", settings.store,
                            joined(exc.problems)) from None
    plan = plan_remove(gen, args.target)
    left = [e for e in gen.cas if e.file not in plan.changes]
    if gen.cas and not left and not args.force:
        raise OperatorError(f"{args.target}: this removes the last CA", settings.store,
                            "with no CA every client certificate is refused (pinned ones excepted); "
                            "repeat with --force to do it")
    return _commit(settings, plan, now)


def _show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    now = _utcnow()
    gen = _load(settings, now)
    entries = find_entries(gen, args.target)
    if not entries:
        raise OperatorError(f"{args.target!r} is neither a fingerprint nor a file of the trust store",
                            settings.store)
    for n, e in enumerate(entries):
        if n:
            print()
        _print_entry(e, now, settings.expiry_warning_days)
    return 0


def _print_entry(e: StoreEntry, now: _dt.datetime, warn_days: int) -> None:
    rows = [("kind", e.kind), ("file", e.file), ("subject", e.subject), ("issuer", e.issuer),
            ("sha256", e.fingerprint)]
    if e.kind == "CRL":
        rows += [("last update", f"{e.not_before:%Y-%m-%d %H:%M:%S}Z"),
                 ("next update", f"{e.not_after:%Y-%m-%d %H:%M:%S}Z" if e.not_after else "-"),
                 ("revoked", str(e.revoked)), ("signer", e.key)]
        if e.crl is not None:
            rows += [("revoked serial", f"{r.serial_number:x} since {r.revocation_date_utc:%Y-%m-%d}")
                     for r in list(e.crl)[:20]]
    else:
        assert e.cert is not None
        bc = certinfo.basic_constraints(e.cert)
        ekus = certinfo.ext_key_usages(e.cert)
        rows += [("serial", f"{e.serial:x}" if e.serial is not None else "-"), ("key", e.key),
                 ("not before", f"{e.not_before:%Y-%m-%d %H:%M:%S}Z"),
                 ("not after", f"{e.not_after:%Y-%m-%d %H:%M:%S}Z ({e.days_left(now)} days left)"),
                 ("self-signed", "yes" if e.self_signed else "no"),
                 ("CA", "yes" + (f", path length {bc.path_length}" if bc and bc.path_length is not None else "")
                  if bc and bc.ca else "no"),
                 ("ext key usage", ", ".join(certinfo.eku_name(o) for o in ekus) if ekus is not None else "(none)")]
    for w in entry_warnings(e, now, warn_days):
        rows.append(("warning", w))
    for k, v in rows:
        print(f"{k + ':':<15} {certinfo.printable_repr(v)}")


def _verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    now = _utcnow()
    gen = _load(settings, now)
    certs, _ = read_certificates(_read(args.cert), args.cert)
    if not certs:
        raise OperatorError("holds no certificate", args.cert)
    chain = certs[1:]
    if args.chain:
        more, _ = read_certificates(_read(args.chain), args.chain)
        chain += more
    verdict = verify(certs[0], chain, gen, settings.policy, now=now)
    result = map_account(certs[0], settings.mapping)
    print(f"certificate:  {certinfo.printable_repr(verdict.subject)}")
    print(f"sha256:       {verdict.fingerprint}")
    print(f"verdict:      {'ACCEPTED' if verdict.ok else 'REFUSED'}")
    for r in verdict.reasons:
        print(f"reason:       {r.code}: {r.message}")
    for w in verdict.warnings:
        print(f"warning:      {w.code}: {w.message}")
    for n, c in enumerate(verdict.chain):
        entry = gen.by_fingerprint.get(certinfo.fingerprint(c))
        where = f"[{entry.file}]" if entry else ("[client certificate]" if n == 0 else "[sent by the client]")
        print(f"chain:        {certinfo.label(c.subject)}  {where}")
    if verdict.ok and verdict.valid_until is not None:
        print(f"valid until:  {verdict.valid_until:%Y-%m-%d %H:%M:%S}Z")
    if settings.mapping.rule == "ldap":  # the account is the directory's answer: `map` asks it
        print("account:      asked of the directory (mapping = ldap): see `certgate trust map --config FILE CERT`")
        return 0 if verdict.ok else 1
    if result.account is not None:
        print(f"account:      {result.account} (mapping = {settings.mapping.rule})")
    else:
        print(f"account:      none: {result.reason}")
    return 0 if verdict.ok and result.account is not None else 1


def _p12_password(args: argparse.Namespace) -> bytes | None:
    if args.password_file:
        raw = _read(args.password_file)
        return raw.splitlines()[0] if raw.splitlines() else b""
    if args.password_stdin:
        return sys.stdin.buffer.readline().rstrip(b"\r\n") if hasattr(sys.stdin, "buffer") else \
            sys.stdin.readline().rstrip("\r\n").encode()
    return None


def _import_p12(args: argparse.Namespace) -> int:
    settings = _settings(args)
    now = _utcnow()
    gen = _load(settings, now)
    data = _read(args.file)
    password = _p12_password(args)
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        if password is None and sys.stdin.isatty():
            password = getpass.getpass(f"password for {args.file}: ").encode()
            try:
                key, cert, extra = pkcs12.load_key_and_certificates(data, password)
            except ValueError:
                raise OperatorError("cannot open", args.file, "wrong password or not a PKCS#12 file") from None
        elif password is None:
            raise OperatorError("cannot open", args.file, "it needs a password (use --password-file F or "
                                "--password-stdin) or it is not a PKCS#12 file")
        else:
            raise OperatorError("cannot open", args.file, "wrong password or not a PKCS#12 file") from None
    if args.pin:
        if cert is None:
            raise OperatorError("holds no client certificate to pin", args.file)
        plan = plan_pin(cert, gen, now, min_rsa_bits=settings.min_rsa_bits,
                        allow_missing_eku=settings.unsafe_allow_missing_eku)
    else:
        cas = [c for c in ([cert] if cert is not None else []) + list(extra) if certinfo.is_ca(c)]
        if not cas:
            what = f" (it holds the client certificate {certinfo.label(cert.subject)}; " \
                   "use --pin to pin it)" if cert is not None else ""
            raise OperatorError(f"holds no CA certificate{what}", args.file)
        plan = plan_add(cas, [], gen, now, min_rsa_bits=settings.min_rsa_bits, skip_duplicates=True)
    if key is not None:
        plan.messages.append(f"note: the private key in {args.file} was not imported (the store holds no keys)")
    return _commit(settings, plan, now)


def _map(args: argparse.Namespace) -> int:
    settings = _settings(args, need_store=False)
    mapping: MappingSettings = settings.mapping
    if args.rule:
        mapping = replace(mapping, rule=args.rule)
    if args.regex:
        mapping = replace(mapping, regex=args.regex)
    if args.map_file:
        mapping = replace(mapping, map_file=Path(args.map_file))
    if args.strip_domain:
        mapping = replace(mapping, strip_domain=True)
    certs, _ = read_certificates(_read(args.cert), args.cert)
    if not certs:
        raise OperatorError("holds no certificate", args.cert)
    cert: x509.Certificate = certs[0]
    print(describe(cert, mapping))
    if mapping.rule == "ldap":
        config = getattr(args, "config", None)
        if not config or _directory is None:
            raise OperatorError("mapping = ldap asks the directory", why="give the gateway's --config FILE (with "
                                "its [ldap] section)")
        lines, result = _directory(Path(config), cert)
        print("\n".join(lines))
    else:
        result = map_account(cert, mapping)
    if result.account is None:
        return 1
    if args.account is not None:
        ok = account_matches(result.account, args.account, mapping.strip_domain)
        print(f"login as {certinfo.printable_repr(args.account)}: {'allowed' if ok else 'refused (not an exact match)'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised by the black-box tests
    sys.exit(run_command("certgate trust", main, sys.argv[1:]))
