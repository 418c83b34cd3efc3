"""The ``certgate`` console script: one entry point, one subcommand per job.

Each subcommand lives in its own module and is imported only when used, so
``certgate trust list`` never loads Twisted's reactor.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

#: subcommand -> (module, function, one-line help). The function takes the remaining
#: argv (without the subcommand word) and returns an exit status.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("proxy.cli", "run_main", "run the gateway in the foreground"),
    "check-config": ("proxy.cli", "check_config_main", "validate a config file and print every problem"),
    "demo-pki": ("proxy.demo", "demo_pki_main", "write a demo CA, server and client certificates"),
    "demo-upstream": ("proxy.demo", "demo_upstream_main", "run a small upstream that shows the headers it got"),
    "trust": ("proxy.cli", "trust_main", "manage the trust store (list, add, remove, show, verify, import-p12, map)"),
    "passwd": ("proxy.login.cli", "passwd_main", "set or delete an account's password in the password file"),
    "totp": ("proxy.login.cli", "totp_main", "enroll, list or remove TOTP secrets"),
    "sessions": ("proxy.sessions_cli", "main", "list or revoke trusted sessions"),
    "cockpit-auth": ("proxy.frontdoors.cockpit_auth", "main", "the auth command cockpit-ws runs ([bearer] command)"),
    "version": ("proxy.cli", "version_main", "print the version"),
}


def _usage() -> str:
    width = max(len(k) for k in SUBCOMMANDS)
    lines = ["usage: certgate COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    lines += ["", "`certgate COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``certgate COMMAND ...``; returns (and exits with) the command's status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"certgate: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = SUBCOMMANDS[name]
    fn: Callable[[list[str]], int] = getattr(importlib.import_module(module), func)
    status = fn(rest)
    return int(status or 0)


def trust_main(argv: list[str]) -> int:
    """``certgate trust ...`` (trust.cli), with the directory client for ``map`` under mapping = ldap."""
    from trust.cli import main as trust_cli

    return trust_cli(argv, directory=_describe_directory)


def _describe_directory(config_path: Path, cert: Any) -> tuple[list[str], Any]:
    from cryptography.hazmat.primitives.serialization import Encoding

    from proxy.config import ConfigError, load_config
    from proxy.directory import describe_blocking
    from trust.cli import CliError

    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        raise CliError(f"config {config_path} has problems:\n" + "\n".join(f"  {p}" for p in e.problems)) from None
    return describe_blocking(cfg.ldap, cert, cert.public_bytes(Encoding.DER))


def version_main(argv: list[str]) -> int:
    from importlib.metadata import PackageNotFoundError, version

    try:
        print("certgate", version("certgate"))
    except PackageNotFoundError:
        print("certgate (not installed)")
    return 0


def check_config_main(argv: list[str]) -> int:
    """``certgate check-config FILE``: exit 0 only when the file is valid."""
    ap = argparse.ArgumentParser(prog="certgate check-config", description="Validate a certgate config file.")
    ap.add_argument("config", help="path of the config file")
    ap.add_argument("--quiet", "-q", action="store_true", help="print nothing when valid")
    ns = ap.parse_args(argv)
    from proxy.config import ConfigError, load_config
    from proxy.service import preflight

    try:
        cfg = load_config(ns.config)
    except ConfigError as e:
        print(f"{ns.config}: {len(e.problems)} problem(s):", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    problems = preflight(cfg)
    if problems:
        print(f"{ns.config}: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    if not ns.quiet:
        print(f"{ns.config}: OK ({len(cfg.routes)} route(s), client_auth = {cfg.listen.client_auth}, "
              f"trust store {cfg.trust.store})")
    return 0


def run_main(argv: list[str]) -> int:
    """``certgate run --config FILE``: the same service twistd runs, in the foreground."""
    ap = argparse.ArgumentParser(prog="certgate run", description="Run the gateway in the foreground.")
    ap.add_argument("--config", "-c", required=True, help="path of the config file")
    ap.add_argument("--pidfile", default="", help="write the process id here (default: none)")
    ns = ap.parse_args(argv)
    import platform

    if platform.system() == "Linux" and "twisted.internet.reactor" not in sys.modules:
        from proxy._reactor import install

        install()
    from twisted.scripts.twistd import run

    sys.argv = ["certgate", "--nodaemon", f"--pidfile={ns.pidfile}", "--logger=proxy.logs.observer_from_env",
                "certgate", "--config", ns.config]
    import os

    os.environ["CERTGATE_CONFIG"] = ns.config
    run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
