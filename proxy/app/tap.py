"""The twistd side: ``Options``, ``makeService`` and the ``ServiceMaker`` for ``certgate``.

``twistd -n certgate --config FILE`` finds :data:`SERVICE_MAKER` through the plugin file in
``twisted/plugins/``; ``certgate run`` hands it to twistd directly (no plugin scan), so both
routes build the same service, log through the same ``[log]`` observer and run the same
reactor (:mod:`proxy.app.reactor` on Linux, unless ``twistd --reactor`` chose another).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import NoReturn

from proxy.listener.openssl_conf import configure_process, openssl_loaded

if not openssl_loaded():  # before anything loads OpenSSL: no TLS 1.3 tickets (docs/tls.md)
    configure_process()

from twisted.application.service import IService, ServiceMaker
from twisted.python import usage

#: what ``twistd`` lists and ``certgate run`` starts
SERVICE_MAKER = ServiceMaker("certgate", "proxy.app.tap",
                             "mTLS-terminating reverse proxy with certificate-bound trusted sessions", "certgate")

LOGGER = "proxy.observe.logs.observer_from_env"
#: Exit status of ``certgate run`` (and twistd) for a configuration problem.
EXIT_CONFIG = 2


class Options(usage.Options):
    """``twistd certgate --config FILE``."""

    optParameters = [["config", "c", None, "path of the certgate config file"]]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        os.environ["CERTGATE_CONFIG"] = self["config"]
        parent = getattr(self, "parent", None)
        # twistd without its own --logger/--logfile/--syslog logs through [log], as `certgate run` does
        if parent is not None and not (parent.get("logger") or parent.get("logfile") or parent.get("syslog")):
            parent["logger"] = LOGGER


def install_reactor() -> None:
    """Install the direct epoll reactor on Linux when no reactor is installed yet (no-op otherwise)."""
    if platform.system() == "Linux" and "twisted.internet.reactor" not in sys.modules:
        from proxy.app.reactor import install

        install()


def makeService(options: Options) -> IService:
    """Load the config, make the start checks, build the service.

    A config problem is printed as one line per problem (``certgate: FILE: [section] key:
    reason``) and the process exits with status 2, before anything is started.
    """
    install_reactor()
    from proxy.app.checks import startup_problems
    from proxy.config import ConfigError, load_config
    from proxy.app.service import make_service

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
    from proxy.listener.context import TLSConfigError
    from proxy.login.keys import KeyFileError
    from proxy.stores.interface import StoreError
    from trust.store import TrustStoreError

    return (OSError, ValueError, StoreError, KeyFileError, TLSConfigError, TrustStoreError)


def _refuse(path: str, lines: list[str]) -> NoReturn:
    for line in lines:
        sys.stderr.write(f"certgate: {path}: {line}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_CONFIG)
