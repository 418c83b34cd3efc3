"""The twistd side: ``Options`` and ``makeService`` for the ``certgate`` plugin."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from proxy._openssl_conf import configure_process, openssl_loaded

if not openssl_loaded():  # before anything loads OpenSSL: no TLS 1.3 tickets (docs/tls.md)
    configure_process()

from twisted.application.service import IService
from twisted.python import usage

#: Exit status of ``certgate run`` (and twistd) for a configuration problem.
EXIT_CONFIG = 2


class Options(usage.Options):
    """``twistd certgate --config FILE``."""

    optParameters = [["config", "c", None, "path of the certgate config file"]]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        os.environ.setdefault("CERTGATE_CONFIG", self["config"])


def makeService(options: Options) -> IService:
    """Load the config, make the start checks, build the service.

    A config problem is printed as one line per problem (``certgate: FILE: [section] key:
    reason``) and the process exits with status 2, before anything is started.
    """
    from proxy.checks import startup_problems
    from proxy.config import ConfigError, load_config
    from proxy.service import make_service

    path = options["config"]
    try:
        cfg = load_config(path)
    except ConfigError as e:
        _refuse(path, [str(p) for p in e.problems])
    problems = startup_problems(cfg)
    if problems:
        _refuse(path, [str(p) for p in problems])
    try:
        return make_service(cfg)
    except _config_errors() as e:  # a file changed between the checks and here
        _refuse(path, [str(e) or type(e).__name__])


def _config_errors() -> tuple[type[BaseException], ...]:
    """What building the service raises for a bad file or setting (never a traceback for these)."""
    from proxy._tls_context import TLSConfigError
    from proxy.login.keys import KeyFileError
    from proxy.stores.interface import StoreError
    from trust.store import TrustStoreError

    return (OSError, ValueError, StoreError, KeyFileError, TLSConfigError, TrustStoreError)


def _refuse(path: str, lines: list[str]) -> NoReturn:
    for line in lines:
        sys.stderr.write(f"certgate: {path}: {line}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_CONFIG)
