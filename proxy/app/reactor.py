"""An epoll reactor without the per-event log-context wrapper, for ``certgate run``.

Twisted's ``EPollReactor.doPoll`` wraps every I/O event in ``log.callWithLogger``, which
builds a log context per event; on a keep-alive proxy that is about a tenth of the CPU
per request. This subclass dispatches events directly and logs a failing handler the
same way (the event loop never dies of one). A plain read event (the usual one) runs
``_doReadOrWrite``'s steps for it inline. Only the legacy ``system`` log prefix of
lines logged *inside* I/O handlers is lost; certgate's own logs carry namespaces.
``twistd -n certgate`` keeps Twisted's default reactor unless ``--reactor`` says otherwise.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN
from typing import Any

from twisted.internet import epollreactor
from twisted.internet.posixbase import _NO_FILEDESC
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
                if event != EPOLLIN:
                    drdw(selectable, fd, event)
                    continue
                # Plain readability, the common event: _doReadOrWrite's steps for it, inline.
                in_read = False
                why: Any
                try:
                    if selectable.fileno() == -1:
                        why = _NO_FILEDESC
                    else:
                        why = selectable.doRead()
                        in_read = True
                except BaseException:
                    why = sys.exc_info()[1]
                    log.err()
                if why:
                    self._disconnectSelectable(selectable, why, in_read)
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
