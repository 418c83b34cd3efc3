"""proxy.timerwheel: one reactor timer for many deadlines, on twisted's Clock (never sleeps)."""

from __future__ import annotations

from twisted.internet.task import Clock

from proxy.http.flow import K_HEADER, K_IDLE, Flow
from proxy.timerwheel import TICK, TimerWheel


class Entry:
    def __init__(self, log: list[tuple[str, float]], name: str) -> None:
        self.log, self.name = log, name

    def expire(self, now: float) -> None:
        self.log.append((self.name, now))


def start(at: float = 1000.03) -> tuple[Clock, TimerWheel, list[tuple[str, float]]]:
    clock = Clock()
    clock.advance(at)  # not on a tick boundary
    return clock, TimerWheel(clock), []


def test_an_entry_expires_at_its_time_at_most_one_tick_late_never_early() -> None:
    clock, wheel, log = start()
    wheel.add(Entry(log, "a"), clock.seconds() + 2.0)
    clock.advance(2.0 - 0.001)
    assert log == []
    clock.advance(TICK)
    assert [n for n, _ in log] == ["a"]
    assert 1002.03 <= log[0][1] <= 1002.03 + TICK
    assert not clock.getDelayedCalls() and len(wheel) == 0  # an empty wheel holds no reactor timer


def test_many_entries_share_one_reactor_timer() -> None:
    clock, wheel, log = start()
    for i in range(100):
        wheel.add(Entry(log, str(i)), clock.seconds() + 1 + i * 0.01)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(3)
    assert sorted(int(n) for n, _ in log) == list(range(100))
    assert not clock.getDelayedCalls()


def test_a_discarded_entry_never_expires_and_an_earlier_one_rearms_the_timer() -> None:
    clock, wheel, log = start()
    a, b = Entry(log, "a"), Entry(log, "b")
    ka = wheel.add(a, clock.seconds() + 5)
    wheel.add(b, clock.seconds() + 1)  # earlier than the armed timer
    wheel.discard(a, ka)
    clock.advance(1 + TICK)
    assert [n for n, _ in log] == ["b"]
    clock.advance(10)
    assert [n for n, _ in log] == ["b"]
    assert not clock.getDelayedCalls()


def test_move_and_order_within_a_bucket() -> None:
    clock, wheel, log = start()
    a, b, c = Entry(log, "a"), Entry(log, "b"), Entry(log, "c")
    t = clock.seconds() + 1
    wheel.add(a, t)
    wheel.add(b, t)
    kc = wheel.add(c, t + 5)
    wheel.move(c, kc, t)
    clock.advance(2)
    assert [n for n, _ in log] == ["a", "b", "c"]


def test_an_entry_added_while_expiring_goes_to_a_later_tick() -> None:
    clock, wheel, log = start()

    class Again:
        count = 0

        def expire(self, now: float) -> None:
            self.count += 1
            if self.count < 3:
                wheel.add(self, now)  # due at once: must not loop inside this firing

    e = Again()
    wheel.add(e, clock.seconds() + 1)
    clock.advance(1 + TICK)
    assert e.count == 1
    clock.advance(TICK)
    assert e.count == 2
    clock.advance(TICK)
    assert e.count == 3
    clock.advance(1)
    assert e.count == 3 and not clock.getDelayedCalls()


def test_a_late_reactor_expires_every_due_bucket_once() -> None:
    clock, wheel, log = start()
    for i in range(5):
        wheel.add(Entry(log, str(i)), clock.seconds() + i + 1)
    clock.advance(60)  # one very late firing
    assert [n for n, _ in log] == ["0", "1", "2", "3", "4"]


def test_nothing_expires_after_stop() -> None:
    clock, wheel, log = start()
    wheel.add(Entry(log, "a"), clock.seconds() + 1)
    wheel.stop()
    clock.advance(5)
    assert log == [] and not clock.getDelayedCalls()


class Host:
    def __init__(self) -> None:
        self.kinds: list[tuple[int, float]] = []
        self.clock: Clock | None = None

    def deadline(self, kind: int) -> None:
        assert self.clock is not None
        self.kinds.append((kind, self.clock.seconds()))


def test_flow_deadline_moves_later_lazily_and_earlier_at_once() -> None:
    clock, wheel, _ = start()
    host = Host()
    host.clock = clock
    flow = Flow(host, clock, wheel)
    t0 = clock.seconds()
    flow.arm(K_IDLE, 10)
    flow.arm(K_IDLE, 20)  # later: the entry stays in its bucket and waits again when it comes
    clock.advance(15)
    assert host.kinds == []
    flow.arm(K_HEADER, 1)  # earlier than the bucket it is in: moved
    clock.advance(1 + TICK)
    assert [k for k, _ in host.kinds] == [K_HEADER]
    assert t0 + 16 <= host.kinds[0][1] <= t0 + 16 + TICK
    assert not clock.getDelayedCalls()  # nothing armed: no timer


def test_flow_disarm_and_stop() -> None:
    clock, wheel, _ = start()
    host = Host()
    host.clock = clock
    a, b = Flow(host, clock, wheel), Flow(host, clock, wheel)
    a.arm(K_IDLE, 1)
    b.arm(K_IDLE, 1)
    a.disarm()
    b.stop()
    b.arm(K_IDLE, 1)  # a stopped flow never arms again
    clock.advance(3)
    assert host.kinds == [] and len(wheel) == 0 and not clock.getDelayedCalls()
