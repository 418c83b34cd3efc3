"""MasterWatch: connections to a server the Sentinels no longer name as master are closed,
on the injected clock, without overlapping checks; a failed discovery closes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from proxy.stores.redis_sentinel import MasterWatch, resolver


@dataclass
class Peer:
    host: str
    port: int


@dataclass
class Transport:
    peer: Peer
    lost: bool = False

    def getPeer(self) -> Peer:
        return self.peer

    def loseConnection(self) -> None:
        self.lost = True


@dataclass
class Conn:
    transport: Transport


@dataclass
class Sentinels:
    answers: list = field(default_factory=list)
    asked: int = 0

    def discover(self) -> Deferred:
        self.asked += 1
        a = self.answers.pop(0)
        return a if isinstance(a, Deferred) else (fail(a) if isinstance(a, Exception) else succeed(a))


def conn(host: str, port: int) -> Conn:
    return Conn(Transport(Peer(host, port)))


def names(table: dict[str, set[str]]):
    return lambda host, port: succeed(table[host]) if host in table else fail(OSError(f"no such host {host}"))


def watch(clock, sentinels, pool, resolve=names({})):
    literal = resolver(None)  # IP literals need no reactor

    def res(host, port):
        return resolve(host, port) if ":" not in host and not host[:1].isdigit() else literal(host, port)
    return MasterWatch(clock, sentinels.discover, lambda: pool, res, "redis store test", interval=1.0)


def test_closes_only_the_connections_to_a_replaced_master_on_the_clock():
    clock, s = Clock(), Sentinels([("10.0.0.2", 6379), ("10.0.0.2", 6379)])
    old, new, other_port = conn("10.0.0.1", 6379), conn("10.0.0.2", 6379), conn("10.0.0.2", 6380)
    w = watch(clock, s, [old, new, other_port])
    w.start()
    clock.advance(0.99)
    assert s.asked == 0 and not old.transport.lost  # nothing before the first interval
    clock.advance(0.01)
    assert s.asked == 1 and w.master == ("10.0.0.2", 6379)
    assert old.transport.lost and other_port.transport.lost and not new.transport.lost
    assert w.closed == 2
    clock.advance(1.0)
    assert s.asked == 2 and w.closed == 4  # the fakes do not drop closed connections: counted again
    w.stop()
    clock.advance(5.0)
    assert s.asked == 2


def test_a_failed_discovery_closes_nothing_and_the_watch_goes_on():
    clock, s = Clock(), Sentinels([Exception("No master found for certgate"), ("10.0.0.2", 6379)])
    old = conn("10.0.0.1", 6379)
    w = watch(clock, s, [old])
    w.start()
    clock.advance(1.0)
    assert s.asked == 1 and not old.transport.lost and w.master is None
    clock.advance(1.0)
    assert s.asked == 2 and old.transport.lost


def test_checks_never_overlap_while_the_sentinels_are_slow():
    clock, slow = Clock(), Deferred()
    s = Sentinels([slow, ("10.0.0.1", 6379)])
    same = conn("10.0.0.1", 6379)
    w = watch(clock, s, [same])
    w.start()
    clock.advance(1.0)
    clock.advance(5.0)
    assert s.asked == 1  # still waiting for the first answer
    slow.callback(("10.0.0.1", 6379))
    clock.advance(1.0)
    assert s.asked == 2 and not same.transport.lost and w.closed == 0


def test_addresses_compare_as_ip_addresses_and_names_are_resolved():
    clock = Clock()
    v6 = conn("::1", 6379)
    s = Sentinels([("0:0:0:0:0:0:0:1", 6379), ("redis-b.example", 6379), ("gone.example", 6379)])
    v4 = conn("10.0.0.7", 6379)
    w = watch(clock, s, [v6, v4], resolve=names({"redis-b.example": {"10.0.0.7", "2001:db8::7"}}))
    w.start()
    clock.advance(1.0)
    assert not v6.transport.lost and v4.transport.lost  # same IPv6 address, spelled differently
    v4.transport.lost = v6.transport.lost = False
    clock.advance(1.0)
    assert v6.transport.lost and not v4.transport.lost  # the name resolves to the IPv4 peer
    v4.transport.lost = v6.transport.lost = False
    clock.advance(1.0)
    assert not v4.transport.lost and not v6.transport.lost  # a name that does not resolve: keep what we have


def test_the_resolver_answers_ip_literals_at_once_and_names_off_the_reactor_thread():
    from tests.reactor_thread import blocking, reactor_running, resolve

    assert resolve(resolver(None)("2001:0db8::0001", 6379)) == {"2001:db8::1"}
    got = blocking(lambda: resolver(reactor_running())("localhost", 6379))
    assert got and got <= {"127.0.0.1", "::1"}, got
