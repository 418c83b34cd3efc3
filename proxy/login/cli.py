"""``certgate passwd`` and ``certgate totp``: manage the password file and TOTP secrets.

``certgate passwd ACCOUNT [--config FILE | --file PATH] [--password-stdin] [--delete]``
``certgate totp enroll ACCOUNT [--config FILE] [--no-verify] [--issuer NAME]``
``certgate totp remove ACCOUNT [--config FILE]`` / ``certgate totp list [--config FILE]``

Paths come from the config's ``[login]`` section (``password_file``, ``totp_secrets``,
``totp_key``); ``--file``/``--secrets``/``--key`` override them. A refusal raises
:class:`~trust.cli_errors.OperatorError` (exit status 2, one line printed by the ``certgate``
dispatcher): a usage error, a config or file that will not load, an unknown account, no TTY,
passwords that differ, no valid code.
"""

from __future__ import annotations

import argparse
import getpass
import io
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, IO

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config

from trust.cli_errors import OperatorError, Parser, config_problems, joined, os_error

DEFAULT_CONFIG = "/etc/certgate/certgate.conf"
VERIFY_ATTEMPTS = 3


def _login_section(path: str) -> tuple[Any, Any]:
    """The config and its ``[login]`` section; raises OperatorError naming every problem."""
    from proxy.config import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as e:
        raise config_problems(path, e.problems) from None
    return cfg, cfg.login


# --------------------------------------------------------------------------- passwd

def passwd_main(argv: list[str], *, stdin: IO[str] | None = None, stdout: IO[str] | None = None,
                stderr: IO[str] | None = None, prompt: Callable[[str], str] | None = None) -> int:
    """``certgate passwd ACCOUNT``: set (prompting twice) or ``--delete`` an account's password.

    Returns 0; raises OperatorError for the dispatcher (an unknown account for --delete, no
    terminal without --password-stdin, a malformed password file...)."""
    from proxy.login.passwords import PasswordError, PasswordFileError, delete_password, set_password

    out = stdout or sys.stdout
    ap = Parser(prog="certgate passwd", description="Set or delete a password in certgate's "
                                 "password file ([login] password_file, scrypt hashes).")
    ap.add_argument("account", help="the account (exactly as the certificate maps it)")
    ap.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    ap.add_argument("--file", help="password file (overrides [login] password_file)")
    ap.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    ap.add_argument("--delete", action="store_true", help="remove the account's password")
    ns = ap.parse_args(argv)
    path = Path(ns.file) if ns.file else None
    if path is None:
        _, login = _login_section(ns.config)
        if not login.password_file:
            raise OperatorError("[login] password_file is not set", ns.config, "set it or pass --file")
        path = Path(login.password_file)
    try:
        if ns.delete:
            if delete_password(path, ns.account):
                print(f"{path}: password of {ns.account!r} deleted", file=out)
                return 0
            raise OperatorError(f"{ns.account!r} has no password", path)
        if not ns.password_stdin and prompt is None and not (stdin or sys.stdin).isatty():
            raise OperatorError("standard input is not a terminal, so the password cannot be asked for",
                                why="pipe it with --password-stdin")
        if ns.password_stdin:
            line = (stdin or sys.stdin).readline()
            password = line[:-1] if line.endswith("\n") else line
            password = password[:-1] if password.endswith("\r") else password
        else:
            ask = prompt or getpass.getpass
            password = ask(f"New password for {ns.account}: ")
            if ask("Repeat it: ") != password:
                raise OperatorError("the passwords differ", why="nothing changed")
        set_password(path, ns.account, password)
        print(f"{path}: password of {ns.account!r} set", file=out)
        return 0
    except PasswordError as e:
        raise OperatorError(str(e), path, "nothing changed") from None
    except PasswordFileError as e:
        raise OperatorError("the password file is malformed; nothing changed", why=joined(e.problems)) from None
    except OSError as e:  # named by the password file, not the temporary file of the atomic write
        raise os_error(e, path) from None


# --------------------------------------------------------------------------- totp

#: ANSI colours set explicitly (never the terminal's defaults), so the code reads the same on
#: light and dark themes: black modules on white, with a white quiet zone of QR_BORDER modules
_FG = {True: "30", False: "97"}
_BG = {True: "40", False: "107"}
QR_BORDER = 4


def _qr_text(uri: str) -> str:
    """The QR code of ``uri`` for a terminal: two module rows per text line (upper half block),
    both colours explicit, a 4-module quiet zone."""
    import segno

    rows = [[bool(b) for b in row] for row in segno.make(uri, error="m").matrix_iter(scale=1, border=QR_BORDER)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2]):
        cells = "".join(f"\033[{_FG[t]};{_BG[b]}m\u2580" for t, b in zip(top, bottom))
        lines.append(cells + "\033[0m")
    return "\n".join(lines) + "\n"


def _qr_png(uri: str, path: str) -> None:
    """Write the QR code of ``uri`` as a PNG (8 px modules, 4-module quiet zone), mode 0600: it holds the secret."""
    import os

    import segno

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        segno.make(uri, error="m").save(fh, kind="png", scale=8, border=QR_BORDER)


def _mark_used(cfg: Config, account: str, step: int, err: IO[str]) -> None:
    """Record the verification code's step as used, so it cannot log in a second time."""
    try:
        from proxy.stores import open_store

        store = open_store(cfg.sessions.store, cfg.base_dir)
    except Exception as e:  # the store may be remote or down: say so, enrolment is still valid
        print(f"certgate totp: warning: could not record the used code in {cfg.sessions.store}: {e}", file=err)
        return
    try:
        store.use_totp_step(account, step)
    finally:
        store.close()


def totp_main(argv: list[str], *, stdin: IO[str] | None = None, stdout: IO[str] | None = None,
              stderr: IO[str] | None = None, now: Callable[[], float] | None = None) -> int:
    """``certgate totp enroll|remove|list``; see the module docstring. Returns 0; raises
    OperatorError for the dispatcher (an account that is not enrolled, no valid code...)."""
    from proxy.login.totp import TotpError

    out, err, inp = stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin
    clock = now or time.time
    ap = Parser(prog="certgate totp", description="Manage TOTP secrets (encrypted at rest).")
    ap.add_argument("--config", "-c", default=argparse.SUPPRESS, help=f"config file (default {DEFAULT_CONFIG})")
    ap.add_argument("--secrets", help="secrets file (overrides [login] totp_secrets)")
    ap.add_argument("--key", help="key file (overrides [login] totp_key)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    en = sub.add_parser("enroll", help="create a secret, show its URI and QR code, activate after a valid code")
    en.add_argument("account")
    en.add_argument("--no-verify", action="store_true", help="activate without asking for a code (scripts)")
    en.add_argument("--issuer", default="certgate", help="issuer shown by the authenticator app")
    en.add_argument("--qr-png", metavar="FILE", help="also write the QR code to FILE as a PNG (mode 0600)")
    rm = sub.add_parser("remove", help="delete an account's secret")
    rm.add_argument("account")
    ls = sub.add_parser("list", help="list enrolled accounts")
    for p in (en, rm, ls):
        p.add_argument("--config", "-c", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    ns.config = getattr(ns, "config", DEFAULT_CONFIG)
    try:
        try:
            return _totp(ns, out, err, inp, clock)
        except TotpError as e:  # the secrets or key file cannot be used: it names which and why
            raise OperatorError(str(e)) from None
    except OperatorError as e:
        e.verb = ns.cmd
        raise


def _totp(ns: argparse.Namespace, out: IO[str], err: IO[str], inp: IO[str], clock: Callable[[], float]) -> int:
    from proxy.login.totp import TotpSecrets, check_code, new_secret, provisioning_uri

    cfg = None
    secrets_path, key_path, window = ns.secrets, ns.key, 1
    if not (secrets_path and key_path):
        cfg, login = _login_section(ns.config)
        secrets_path = secrets_path or login.totp_secrets
        key_path = key_path or login.totp_key
        window = int(login.totp_window)
        if not secrets_path or not key_path:
            raise OperatorError("[login] totp_secrets and totp_key must be set", ns.config,
                                "set them or pass --secrets/--key")
    store = TotpSecrets(secrets_path, key_path)
    if ns.cmd == "list":
        rows = store.list()
        for account, info in rows:
            if isinstance(info, str):
                print(f"{account}\tUNUSABLE\t{info}", file=out)
            else:
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.created))
                print(f"{account}\tenrolled\t{when}", file=out)
        if not rows:
            print("no account is enrolled", file=err)
        return 0
    if ns.cmd == "remove":
        if store.remove(ns.account):
            print(f"{secrets_path}: TOTP secret of {ns.account!r} removed", file=out)
            return 0
        raise OperatorError(f"{ns.account!r} is not enrolled", secrets_path)
    secret = new_secret()
    uri = provisioning_uri(secret, ns.account, ns.issuer)
    print(f"Scan this QR code with the authenticator app of {ns.account} (or enter the URI):\n", file=out)
    print(_qr_text(uri), file=out)
    print(uri, file=out)
    if ns.qr_png:
        _qr_png(uri, ns.qr_png)
        print(f"QR code written to {ns.qr_png} (it holds the secret: delete it after scanning)", file=out)
    if not ns.no_verify:
        for attempt in range(VERIFY_ATTEMPTS):
            print("Code shown by the app: ", end="", file=out, flush=True)
            code = inp.readline().strip()
            step = check_code(secret, code, clock(), window)
            if step is not None:
                if cfg is not None:
                    _mark_used(cfg, ns.account, step, err)
                break
            print("that code is not valid (six digits, current time step)", file=out)
        else:
            raise OperatorError(f"no valid code after {VERIFY_ATTEMPTS} attempts", secrets_path,
                                f"{ns.account!r} was not enrolled")
    store.store(ns.account, secret, clock())
    print(f"{secrets_path}: TOTP enabled for {ns.account!r}", file=out)
    return 0
