"""``certgate webauthn list|remove ACCOUNT``: operators see and remove registered security keys.

``certgate webauthn [--config FILE] list [ACCOUNT] [--json]``
``certgate webauthn [--config FILE] remove ACCOUNT [--key ID-OR-NAME]``

``--config`` may stand before or after the verb. The file is ``[webauthn] credentials``.
Removals are written to the audit log of ``[audit] file`` (event ``webauthn``, decision
``remove``, the operator's user name). Exit status: 0 done; 2 an operator mistake (one line:
a usage error, a config or credentials file that will not load, an account without that key).
People add keys themselves on ``/.certgate/webauthn``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import TYPE_CHECKING, Any, IO

from proxy.login.cli import DEFAULT_CONFIG, _login_section
from trust.cli_errors import OperatorError, Parser
from trust.escape import safe_text

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "never"


def _audit(cfg: Config, account: str, removed: list[Any]) -> None:
    """One ``webauthn``/``remove`` record per removed key, in the gateway's audit log."""
    from proxy.observe.audit import Audit

    audit = Audit.open(cfg.audit.file)  # as the gateway and `certgate sessions` open it
    try:
        operator = getpass.getuser()
    except (KeyError, OSError):
        operator = "?"
    for c in removed:
        audit.record("webauthn", "remove", "operator", account=account, credential=c.id[:16], name=c.name,
                     operator=operator)


def main(argv: list[str], *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """``certgate webauthn list|remove``; returns 0, raises OperatorError for the dispatcher."""
    from proxy.login.webauthn_creds import CredentialFile, CredentialFileError

    out, err = stdout or sys.stdout, stderr or sys.stderr
    ap = Parser(prog="certgate webauthn", description="List or remove the security keys people "
                                 "registered on /.certgate/webauthn ([webauthn] credentials).")
    ap.add_argument("--config", "-c", default=argparse.SUPPRESS, help=f"config file (default {DEFAULT_CONFIG})")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="every account's keys, or one account's")
    ls.add_argument("account", nargs="?")
    ls.add_argument("--json", action="store_true", help="one JSON object per key")
    rm = sub.add_parser("remove", help="remove an account's keys (all, or the one --key names)")
    rm.add_argument("account")
    rm.add_argument("--key", help="the key's id (as list shows it) or name")
    for p in (ls, rm):
        p.add_argument("--config", "-c", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    config = getattr(ns, "config", DEFAULT_CONFIG)
    try:
        cfg, _ = _login_section(config)
        if not cfg.webauthn.credentials:
            raise OperatorError("[webauthn] credentials is not set", config)
        creds = CredentialFile(cfg.webauthn.credentials)
        if ns.cmd == "list":
            accounts = creds.accounts()
            if ns.account is not None:
                accounts = {ns.account: accounts.get(ns.account, [])}
            rows = [(a, c) for a, cs in accounts.items() for c in cs]
            for a, c in rows:
                if ns.json:
                    print(json.dumps({"account": a, "id": c.id, "name": c.name, "created": c.created,
                                      "last_used": c.last_used, "sign_count": c.sign_count,
                                      "user_verified": c.user_verified}), file=out)
                else:
                    print(f"{safe_text(a)}\t{safe_text(c.id)}\t{safe_text(repr(c.name))}\tadded {_when(c.created)}"
                          f"\tlast used {_when(c.last_used)}", file=out)
            if not rows:
                print("no security key is registered" + (f" for {ns.account!r}" if ns.account else ""), file=err)
            return 0
        removed = creds.remove(ns.account, ns.key)
        if not removed:
            what = f"no key {ns.key!r}" if ns.key else "no security key"
            raise OperatorError(f"{ns.account!r} has {what}", cfg.webauthn.credentials,
                                "`certgate webauthn list` shows the registered keys")
        _audit(cfg, ns.account, removed)
        for c in removed:
            print(f"{cfg.webauthn.credentials}: key {safe_text(repr(c.name))} ({safe_text(c.id)}) of "
                  f"{safe_text(repr(ns.account))} removed", file=out)
        return 0
    except CredentialFileError as e:  # it names the file and why
        error = OperatorError(str(e))
    except OperatorError as e:
        error = e
    error.verb = ns.cmd
    raise error
