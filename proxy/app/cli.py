"""The ``certgate`` console script: one entry point, one subcommand per job.

Each subcommand lives in its own module and is imported only when used, so
``certgate trust list`` never loads Twisted's reactor.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from trust.cli_errors import CommandError, OperatorError, Parser, config_problems, report, run_command

#: subcommand -> (module, function, one-line help). The function takes the remaining
#: argv (without the subcommand word) and returns an exit status.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("proxy.app.cli", "run_main", "run the gateway in the foreground"),
    "check-config": ("proxy.app.cli", "check_config_main", "validate a config file and print every problem"),
    "demo-pki": ("proxy.app.demo", "demo_pki_main", "write a demo CA, server and client certificates"),
    "demo-upstream": ("proxy.app.demo", "demo_upstream_main", "run a small upstream that shows the headers it got"),
    "trust": ("proxy.app.cli", "trust_main", "manage the trust store (list, add, remove, show, verify, import-p12, map)"),
    "passwd": ("proxy.login.cli", "passwd_main", "set or delete an account's password in the password file"),
    "totp": ("proxy.login.cli", "totp_main", "enroll, list or remove TOTP secrets"),
    "webauthn": ("proxy.login.webauthn_cli", "main", "list or remove an account's security keys"),
    "sessions": ("proxy.ops.sessions_cli", "main", "list or revoke trusted sessions"),
    "cockpit-auth": ("proxy.frontdoors.cockpit_auth", "main", "the auth command cockpit-ws runs ([bearer] command)"),
    "version": ("proxy.app.cli", "version_main", "print the version"),
}


#: verbs that read a config file; the others accept --config and ignore it
CONFIG_VERBS = frozenset({"run", "check-config", "trust", "passwd", "totp", "webauthn", "sessions", "cockpit-auth"})


def _usage() -> str:
    width = max(len(k) for k in SUBCOMMANDS)
    lines = ["usage: certgate [--config FILE] COMMAND [ARGS...] [--config FILE]    (certgate --version)", "",
             "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    lines += ["", "`certgate COMMAND --help` shows a command's options. --config (-c) may stand before",
              "or after the command, for every command.", "",
              "exit status: 0 done (trust verify/map: yes); 1 the answer is no (trust verify/map), or a",
              "runtime failure that is not your mistake (admin API or session store down, disk error);",
              "2 operator mistake (one line on stderr: where, what, why); 70 unexpected error",
              "(CERTGATE_DEBUG=1 shows the traceback); 130 interrupted."]
    return "\n".join(lines)


def take_config(args: list[str]) -> tuple[str | None, list[str]]:
    """Remove every ``--config FILE``, ``--config=FILE`` and ``-c FILE`` before ``--``.

    Returns (the file or None, the other arguments in order). Raises OperatorError when the
    option lacks its value or names two different files.
    """
    found: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        if a in ("--config", "-c"):
            if i + 1 >= len(args):
                raise OperatorError(f"{a} needs a file name")
            found.append(args[i + 1])
            i += 2
            continue
        if a.startswith("--config="):
            found.append(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    if len(set(found)) > 1:
        raise OperatorError(f"--config given twice with different files: {found[0]}, {found[1]}")
    return (found[0] if found else None), rest


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``certgate COMMAND ...``; returns (and exits with) the command's status.

    ``--config FILE`` is taken from anywhere (before or after the command word) and handed
    to the command first. This is the one place that turns a command's error into its line
    and exit status (the convention in ``trust.cli_errors``): an operator mistake
    (:class:`OperatorError`, an argparse error, an unreadable file) is one escaped line on
    stderr with status 2, never a traceback; a runtime failure (:class:`RuntimeFailure`) one
    line with status 1; an unexpected error one line with status 70 (``CERTGATE_DEBUG=1``
    shows the traceback): :func:`trust.cli_errors.run_command`.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config, args = take_config(args)
    except CommandError as e:
        return report("certgate", e, sys.stderr)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        if args:
            return 0
        return report("certgate", OperatorError("no command given", why="`certgate --help` lists them"), sys.stderr)
    if args[0] in ("--version", "-V"):
        return version_main([])
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        return report("certgate", OperatorError(f"unknown command {name!r}",
                                                why=f"the commands are {', '.join(SUBCOMMANDS)}"), sys.stderr)
    if config is not None and name in CONFIG_VERBS:
        rest = ["--config", config] + rest
    module, func, _ = SUBCOMMANDS[name]
    prog = f"certgate {name}"

    def command(argv_: list[str]) -> int:
        fn: Callable[[list[str]], int] = getattr(importlib.import_module(module), func)
        return fn(argv_)

    return run_command(prog, command, rest)


def trust_main(argv: list[str]) -> int:
    """``certgate trust ...`` (trust.cli), with the directory client for ``map`` under mapping = ldap."""
    from trust.cli import main as trust_cli

    return trust_cli(argv, directory=_describe_directory)


def _describe_directory(config_path: Path, cert: Any) -> tuple[list[str], Any]:
    from cryptography.hazmat.primitives.serialization import Encoding

    from proxy.config import ConfigError, load_config
    from proxy.listener.directory import describe_blocking

    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        raise config_problems(config_path, e.problems) from None
    return describe_blocking(cfg.ldap, cert, cert.public_bytes(Encoding.DER))


def version_main(argv: list[str]) -> int:
    from importlib.metadata import PackageNotFoundError, version

    try:
        print("certgate", version("certgate"))
    except PackageNotFoundError:
        print("certgate (not installed)")
    return 0


def check_config_main(argv: list[str]) -> int:
    """``certgate check-config FILE``: exit 0 only when the file is valid.

    Every problem is one line on stderr, ``certgate check-config: FILE: [section] key: reason``
    (the lines ``certgate run`` prints for the same file), and the status is 2: a bad config is
    an operator mistake.
    """
    ap = Parser(prog="certgate check-config", description="Validate a certgate config file.")
    ap.add_argument("file", nargs="?", help="path of the config file (or --config FILE)")
    ap.add_argument("--config", "-c", help="path of the config file")
    ap.add_argument("--quiet", "-q", action="store_true", help="print nothing when valid")
    ap.add_argument("--running", action="store_true",
                    help="the gateway already runs with this file: skip the port checks (its ports are taken)")
    ns = ap.parse_args(argv)
    if bool(ns.file) == bool(ns.config) and ns.file != ns.config:
        ap.error("give the config file once: certgate check-config FILE, or --config FILE")
    ns.config = ns.config or ns.file
    from proxy.config import ConfigError, load_config
    from proxy.app.service import preflight

    try:
        cfg = load_config(ns.config)
    except ConfigError as e:
        raise OperatorError("invalid config", ns.config, problems=e.problems) from None
    problems = preflight(cfg, bind=not ns.running)
    if problems:
        raise OperatorError("invalid config", ns.config, problems=problems)
    if not ns.quiet:
        print(f"{ns.config}: OK ({len(cfg.routes)} route(s), client_auth = {cfg.listen.client_auth}, "
              f"trust store {cfg.trust.store})")
    return 0


def run_main(argv: list[str]) -> int:
    """``certgate run --config FILE``: the same service twistd runs, in the foreground.

    twistd gets the ServiceMaker directly, so this works from any install mode (a plain
    ``pip install .`` or a strict editable install, where twistd's plugin scan finds nothing).
    """
    ap = Parser(prog="certgate run", description="Run the gateway in the foreground.")
    ap.add_argument("--config", "-c", required=True, help="path of the config file")
    ap.add_argument("--pidfile", default="", help="write the process id here (default: none)")
    ns = ap.parse_args(argv)
    if ns.pidfile and not Path(ns.pidfile).resolve().parent.is_dir():
        raise OperatorError("the folder of the --pidfile does not exist", ns.pidfile)
    from proxy.listener.openssl_conf import configure_process

    configure_process()  # before OpenSSL loads: no TLS 1.3 session tickets (docs/tls.md)
    from proxy.app.tap import LOGGER, SERVICE_MAKER, install_reactor

    install_reactor()
    from twisted.application import app
    from twisted.scripts.twistd import ServerOptions, runApp

    def only_certgate(interface: Any, package: Any = None) -> list[Any]:
        return [SERVICE_MAKER]

    class _Options(ServerOptions):
        _getPlugins = staticmethod(only_certgate)

    sys.argv = ["certgate", "--nodaemon", f"--pidfile={ns.pidfile}", f"--logger={LOGGER}",
                "certgate", "--config", ns.config]
    app.run(runApp, _Options)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
