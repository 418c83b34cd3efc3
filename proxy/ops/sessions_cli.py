"""``certgate sessions list|revoke``: administer trusted sessions from the shell.

Opens the configured session store directly (SQLite file or Redis), so it works whether
or not the gateway runs; a running gateway sees a revoked session at its next request and
closes its WebSockets within its sweep interval (5 s). The ``memory`` store lives inside
the gateway process: the command then talks to the admin API (``[admin] port``, with the
``[admin] token_file`` token) instead, or says how to reach it.

    certgate sessions list [--config FILE] [--all] [--json]
    certgate sessions revoke ID | --account A | --fingerprint F [--config FILE]
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import quote, urlencode

from trust.cli_errors import CommandError, OperatorError, Parser, RuntimeFailure, config_problems
from trust.escape import safe_json, safe_text

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config
    from proxy.interfaces import BlockingStore

DEFAULT_CONFIG = "/etc/certgate/certgate.conf"


def _ts(t: str | None) -> str:
    """An RFC 3339 time from describe(), to the second (``2026-12-01T21:00:00Z``)."""
    return (t[:19] + "Z") if t else "-"


def _table(rows: list[dict[str, Any]]) -> str:
    cols = [("ID", lambda r: r["id"][:12]), ("ACCOUNT", lambda r: r["account"]),
            ("FINGERPRINT", lambda r: r["fingerprint"][:16]), ("CREATED", lambda r: _ts(r["created_at"])),
            ("PROVED_AT", lambda r: _ts(r["proved_at"])), ("ENDS_AT", lambda r: _ts(r["ends_at"])),
            ("TRUSTED", lambda r: "yes" if r["trusted"] else "no"), ("CLIENT_IP", lambda r: r["client_ip"]),
            ("STATE", lambda r: r["state"] if r["state"] == "live" else f"{r['state']} ({r['end_reason']})")]
    cells = [[h for h, _ in cols]] + [[safe_text(f(r)) for _, f in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _parser() -> argparse.ArgumentParser:
    ap = Parser(prog="certgate sessions", description="List or revoke trusted sessions.")
    ap.add_argument("--config", "-c", default=argparse.SUPPRESS, help=f"config file (default {DEFAULT_CONFIG})")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="list sessions (account, fingerprint, times, trusted, client IP)")
    ls.add_argument("--config", "-c", default=argparse.SUPPRESS, help=f"config file (default {DEFAULT_CONFIG})")
    ls.add_argument("--all", action="store_true", help="also show ended and expired sessions")
    ls.add_argument("--json", action="store_true", help="print JSON (full ids and fingerprints)")
    rv = sub.add_parser("revoke", help="end sessions now")
    rv.add_argument("--config", "-c", default=argparse.SUPPRESS, help=f"config file (default {DEFAULT_CONFIG})")
    rv.add_argument("id", nargs="?", help="session id or a unique prefix of at least 8 characters")
    rv.add_argument("--account", help="every session of this account")
    rv.add_argument("--fingerprint", help="every session of this certificate (SHA-256 hex)")
    return ap


def main(argv: Sequence[str]) -> int:
    """Run the command; returns 0. Raises :class:`~trust.cli_errors.OperatorError` (status 2: bad
    usage, a config or store that will not open, no session matches, the admin API refuses) or
    :class:`~trust.cli_errors.RuntimeFailure` (status 1: the store fails during an operation, the
    admin API is unreachable or fails) for the dispatcher to print."""
    ap = _parser()
    ns = ap.parse_args(list(argv))
    ns.config = getattr(ns, "config", DEFAULT_CONFIG)
    if ns.cmd == "revoke":
        given = [x for x in (ns.id, ns.account, ns.fingerprint) if x]
        if ns.id and (ns.account or ns.fingerprint) or not given:
            ap.error("revoke takes a session ID, or --account and/or --fingerprint")
    try:
        return _run(ns)
    except CommandError as e:
        e.verb = ns.cmd
        raise


def _run(ns: argparse.Namespace) -> int:
    from proxy.config import ConfigError, load_config

    try:
        cfg = load_config(ns.config)
    except ConfigError as e:
        raise config_problems(ns.config, e.problems) from None
    if cfg.sessions.store == "memory":
        return _via_admin(cfg, ns)
    from proxy.stores import StoreError, open_engine, options_from

    try:
        store = open_engine(cfg.sessions.store, cfg.base_dir, options_from(cfg.sessions, cfg.base_dir))
    except StoreError as e:
        raise OperatorError("the session store cannot be opened", f"{ns.config}: [sessions] store", str(e)) from None
    try:
        if ns.cmd == "list":
            return _list(store, cfg, ns)
        return _revoke(store, cfg, ns)
    except StoreError as e:  # it opened, then failed: not the operator's mistake
        raise RuntimeFailure("the session store failed", f"{ns.config}: [sessions] store", str(e)) from None
    finally:
        store.close()


def _wanted(ns: argparse.Namespace) -> str:
    """What ``revoke`` looked for, for its error line."""
    if ns.id:
        return f"id {ns.id!r}"
    return " and ".join(f"{k} {v!r}" for k, v in (("account", ns.account), ("fingerprint", ns.fingerprint)) if v)


def _print_list(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(safe_json(rows), indent=1))
    elif rows:
        print(_table(rows))
    else:
        print("no sessions")


def _list(store: BlockingStore, cfg: Config, ns: argparse.Namespace) -> int:
    from proxy.sessions.manager import describe

    now = time.time()
    rows = [describe(r, cfg.sessions, now) for r in store.list()]
    if not ns.all:
        rows = [r for r in rows if r["state"] == "live"]
    rows.sort(key=lambda r: r["created_at"])
    _print_list(rows, ns.json)
    return 0


def _revoke(store: BlockingStore, cfg: Config, ns: argparse.Namespace) -> int:
    from proxy.ops.admin import find_sessions
    from proxy.observe.audit import Audit

    now = time.time()
    if ns.id:
        try:
            found = [r for r in find_sessions(store, ns.id) if r.ended is None]
        except ValueError as e:
            raise OperatorError(f"session id {ns.id!r}", why=str(e)) from None
        if len(found) > 1:
            raise OperatorError(f"{len(found)} live sessions start with {ns.id!r}", cfg.sessions.store,
                                "give more characters")
    else:
        fp = ns.fingerprint.lower().replace(":", "") if ns.fingerprint else None
        found = [r for r in store.list() if r.ended is None and (ns.account is None or r.account == ns.account)
                 and (fp is None or r.fingerprint == fp)]
    if not found:
        raise OperatorError(f"no live session matches {_wanted(ns)}", cfg.sessions.store,
                            "`certgate sessions list` shows the live ones")
    audit = Audit.open(cfg.audit.file)
    n = 0
    for rec in found:
        # a tombstone, not a delete: gateways then report *why* (admin-revoke) and close tunnels
        if store.update(rec.id, ended="admin-revoke", last_seen=max(rec.last_seen, now)) is not None:
            n += 1
            audit.record("session", "end", "admin-revoke", account=rec.account, fingerprint=rec.fingerprint,
                         client_ip=rec.client_ip, session=rec.id[:16], source="cli")
    print(f"revoked {n} session(s)")
    return 0


def _via_admin(cfg: Config, ns: argparse.Namespace) -> int:
    if not cfg.admin.port:
        raise OperatorError("[sessions] store = memory keeps sessions inside the gateway process", ns.config,
                            "enable the admin API ([admin] port) to list or revoke them, or use sqlite:PATH / "
                            "redis://")
    host = cfg.admin.address if ":" not in cfg.admin.address else f"[{cfg.admin.address}]"
    base = f"http://{host}:{cfg.admin.port}"
    if ns.cmd == "list":
        url, method = base + "/sessions" + ("?all=1" if ns.all else ""), "GET"
    elif ns.id:
        url, method = base + "/sessions/" + quote(ns.id, safe=""), "DELETE"
    else:
        q = {k: v for k, v in (("account", ns.account), ("fingerprint", ns.fingerprint)) if v}
        url, method = base + "/sessions?" + urlencode(q), "DELETE"
    req = urllib.request.Request(url, method=method)
    if cfg.admin.token_file:
        from proxy.ops.admin import read_token

        try:
            req.add_header("Authorization", "Bearer " + read_token(cfg.admin.token_file))
        except ValueError as e:
            raise OperatorError(str(e), ns.config) from None
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("message") or e.reason
        except (ValueError, AttributeError):
            msg = e.reason
        # 4xx: the request (id, token) is wrong; 5xx: the gateway failed
        kind = OperatorError if e.code < 500 else RuntimeFailure
        raise kind(f"the admin API answered {e.code}", url, str(msg)) from None
    except (urllib.error.URLError, OSError) as e:
        raise RuntimeFailure("the admin API is unreachable", base,
                             f"{getattr(e, 'reason', e)}; is the gateway running?") from None
    if ns.cmd == "list":
        _print_list(data["sessions"], ns.json)
    else:
        if not data.get("revoked"):
            raise OperatorError(f"no live session matches {_wanted(ns)}", base,
                                "`certgate sessions list` shows the live ones")
        print(f"revoked {data['revoked']} session(s)")
    return 0
