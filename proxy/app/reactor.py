"""An epoll reactor without the per-event log-context wrapper, for ``certgate run``.

Twisted's ``EPollReactor.doPoll`` wraps every I/O event in ``log.callWithLogger``, which
builds a log context per event; on a keep-alive proxy that is about a tenth of the CPU
per request. This subclass dispatches events directly and logs a failing handler the
same way (the event loop never dies of one). Only the legacy ``system`` log prefix of
lines logged *inside* I/O handlers is lost; certgate's own logs carry namespaces.
``twistd -n certgate`` keeps Twisted's default reactor unless ``--reactor`` says otherwise.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet import epollreactor
from twisted.python import log


class DirectEPollReactor(epollreactor.EPollReactor):
    """``EPollReactor`` whose ``doPoll`` calls ``_doReadOrWrite`` without a log context."""

    def doPoll(self, timeout: float | None) -> None:  # noqa: N802 (Twisted's name)
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        drdw = self._doReadOrWrite
        selectables = self._selectables
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                drdw(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.err(None, "I/O handler failed")

    doIteration = doPoll


def install() -> Any:
    """Install :class:`DirectEPollReactor` as the global reactor (before anything imports it)."""
    from twisted.internet.main import installReactor

    reactor = DirectEPollReactor()
    installReactor(reactor)
    return reactor
