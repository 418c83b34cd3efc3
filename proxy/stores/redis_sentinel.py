"""Follow a Sentinel failover even when the store's connections still look healthy.

txredisapi asks the Sentinels for the master's address only when a pool connection is
opened. A master that stops answering (paused process, frozen VM) while the gateway sends it
nothing keeps the gateway's idle connections open. When it comes back after Sentinel promoted
its replica, it still calls itself master for several seconds (Sentinel demotes it only after
it has been back for a while), and the gateway would write sessions, TOTP steps and failure
counters to it, all lost when it resyncs from the new master. :class:`MasterWatch` asks the
Sentinels every ``interval`` seconds where the master is and closes every pool connection
to any other server; its pool slot reconnects through Sentinel to the new master.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

#: seconds between two questions to the Sentinels about the master's address
MASTER_CHECK_INTERVAL = 1.0

Addr = tuple[str, int]
log = Logger()


def _ip(host: str) -> str | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).compressed
    except ValueError:
        return None


def resolver(reactor: Any) -> Callable[[str, int], "Deferred[set[str]]"]:
    """``resolve(host, port)``: the set of IP addresses of ``host`` (an IP literal at once, a
    name through getaddrinfo on the reactor's thread pool, never on the reactor thread)."""
    def resolve(host: str, port: int) -> "Deferred[set[str]]":
        ip = _ip(host)
        if ip is not None:
            return succeed({ip})
        from twisted.internet.threads import deferToThreadPool

        def ips(infos: list[Any]) -> set[str]:
            return {ip for ip in (_ip(str(i[4][0])) for i in infos) if ip}

        d: Deferred[list[Any]] = deferToThreadPool(reactor, reactor.getThreadPool(), socket.getaddrinfo, host,
                                                   port, type=socket.SOCK_STREAM)
        return d.addCallback(ips)
    return resolve


class MasterWatch:
    """Every ``interval`` seconds on ``clock``: ``discover()`` (a Deferred of the master's
    (host, port) as the Sentinels say), then close each of ``connections()`` whose peer is
    not that address.

    Guarantees: a connection to a server the Sentinels no longer name as master is closed
    within ``interval`` plus one discovery (bounded by its own timeout); a failed discovery
    (no Sentinel answers, or none reports a master that is up) closes nothing. Checks never
    overlap. Does not guarantee that nothing reaches a stale master before that: a write in
    that window can still be lost (Redis Sentinel's own limit; ``min-replicas-to-write`` on
    the servers narrows it).
    """

    def __init__(self, clock: Any, discover: Callable[[], "Deferred[Addr]"],
                 connections: Callable[[], Iterable[Any]], resolve: Callable[[str, int], "Deferred[set[str]]"],
                 name: str, interval: float = MASTER_CHECK_INTERVAL) -> None:
        self._discover = discover
        self._connections = connections
        self._resolve = resolve
        self.name = name
        self.interval = float(interval)
        self.master: Addr | None = None
        self.closed = 0  # connections closed because the Sentinels named another master
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    @inlineCallbacks
    def check(self) -> Any:
        """One check; a Deferred firing with the number of connections closed (never failing)."""
        try:
            host, port = yield self._discover()
            ips = yield self._resolve(str(host), int(port))
        except Exception:  # no sane master reported (failover under way, Sentinels away): keep what we have
            return 0
        self.master = (str(host), int(port))
        stale = []
        for conn in list(self._connections()):
            peer = conn.transport.getPeer() if conn.transport is not None else None
            if peer is None or _ip(str(getattr(peer, "host", ""))) not in ips or getattr(peer, "port", None) != port:
                stale.append((conn, peer))
        for conn, _ in stale:
            conn.transport.loseConnection()
        if stale:
            self.closed += len(stale)
            was = sorted({f"{getattr(p, 'host', '?')}:{getattr(p, 'port', '?')}" for _, p in stale})
            log.warn("{name}: the Sentinels name {host}:{port} as the master; closing {n} connection(s) to "
                     "{was} (they reconnect to the new master)", name=self.name, host=host, port=port,
                     n=len(stale), was=", ".join(was))
        return len(stale)
