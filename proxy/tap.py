"""The twistd side: ``Options``, ``makeService`` and the ``ServiceMaker`` for ``certgate``.

``twistd -n certgate --config FILE`` finds :data:`SERVICE_MAKER` through the plugin file in
``twisted/plugins/``; ``certgate run`` hands it to twistd directly (no plugin scan), so both
routes build the same service, log through the same ``[log]`` observer and run the same
reactor (:mod:`proxy._reactor` on Linux, unless ``twistd --reactor`` chose another).
"""

from __future__ import annotations

import os
import platform
import sys

from twisted.application.service import IService, ServiceMaker
from twisted.python import usage

#: what ``twistd`` lists and ``certgate run`` starts
SERVICE_MAKER = ServiceMaker("certgate", "proxy.tap",
                             "mTLS-terminating reverse proxy with certificate-bound trusted sessions", "certgate")

LOGGER = "proxy.logs.observer_from_env"


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
        from proxy._reactor import install

        install()


def makeService(options: Options) -> IService:
    """Load the config and build the service; a bad config is a usage error listing every problem."""
    install_reactor()
    from proxy.config import ConfigError, load_config
    from proxy.service import make_service

    try:
        cfg = load_config(options["config"])
    except ConfigError as e:
        raise SystemExit("certgate: invalid config " + options["config"] + ":\n  "
                         + "\n  ".join(str(p) for p in e.problems))
    return make_service(cfg)
