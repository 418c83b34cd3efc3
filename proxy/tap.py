"""The twistd side: ``Options`` and ``makeService`` for the ``certgate`` plugin."""

from __future__ import annotations

import os

from proxy._openssl_conf import configure_process, openssl_loaded

if not openssl_loaded():  # before anything loads OpenSSL: no TLS 1.3 tickets (docs/tls.md)
    configure_process()

from twisted.application.service import IService
from twisted.python import usage


class Options(usage.Options):
    """``twistd certgate --config FILE``."""

    optParameters = [["config", "c", None, "path of the certgate config file"]]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        os.environ.setdefault("CERTGATE_CONFIG", self["config"])


def makeService(options: Options) -> IService:
    """Load the config and build the service; a bad config is a usage error listing every problem."""
    from proxy.config import ConfigError, load_config
    from proxy.service import make_service

    try:
        cfg = load_config(options["config"])
    except ConfigError as e:
        raise SystemExit("certgate: invalid config " + options["config"] + ":\n  "
                         + "\n  ".join(str(p) for p in e.problems))
    return make_service(cfg)
