"""twistd plugin: ``twistd -n certgate --config /etc/certgate/certgate.conf``.

There is deliberately no ``__init__.py`` in ``twisted/`` or ``twisted/plugins/``.
``certgate run`` does not depend on this file (it passes the same ServiceMaker to twistd).
"""

from proxy.app.tap import SERVICE_MAKER as certgate  # noqa: F401 (twistd's plugin scan finds it here)
