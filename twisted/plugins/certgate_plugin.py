"""twistd plugin: ``twistd -n certgate --config /etc/certgate/certgate.conf``.

There is deliberately no ``__init__.py`` in ``twisted/`` or ``twisted/plugins/``.
"""

from twisted.application.service import ServiceMaker

certgate = ServiceMaker(
    "certgate",
    "proxy.tap",
    "mTLS-terminating reverse proxy with certificate-bound trusted sessions",
    "certgate",
)
