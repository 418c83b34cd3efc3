"""Throttling (per account, certificate, IP) and MaxStartups with an injected RNG."""

import pytest

from proxy.login.throttle import StartupRefused, Startups, Throttle, keys_for
from proxy.stores.memory import MemoryStore
from tests.harness.reactor_thread import Blocking


def test_lockout_after_limit_then_released():
    th = Blocking(Throttle(MemoryStore(), limit=3, window=60, lockout=120))
    keys = keys_for("alice", "fp1", "10.0.0.1")
    assert not th.fail(keys, 0).blocked
    assert not th.fail(keys, 1).blocked
    st = th.fail(keys, 2)
    assert st.blocked and st.retry_after == 120
    assert th.check(keys_for("alice", None, None), 50).blocked
    assert th.check(keys_for(None, "fp1", None), 50).blocked
    assert th.check(keys_for(None, None, "10.0.0.1"), 50).blocked
    assert not th.check(keys_for("bob", "fp2", "10.0.0.2"), 50).blocked
    assert not th.check(keys, 123).blocked  # lockout over


def test_failures_outside_window_do_not_count():
    th = Blocking(Throttle(MemoryStore(), limit=3, window=10, lockout=100))
    k = ["account:alice"]
    th.fail(k, 0)
    th.fail(k, 5)
    assert not th.fail(k, 20).blocked


def test_success_resets():
    th = Blocking(Throttle(MemoryStore(), limit=2, window=60, lockout=60))
    k = ["account:alice"]
    th.fail(k, 0)
    th.succeed(k)
    assert not th.fail(k, 1).blocked


class SeqRng:
    def __init__(self, values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def test_maxstartups_n():
    s = Startups((2, 100, 2))
    assert s.try_acquire() and s.try_acquire()
    assert not s.try_acquire()
    s.release()
    assert s.try_acquire()


def test_maxstartups_start_rate_full():
    s = Startups((1, 50, 3), rng=SeqRng([0.49, 0.51, 0.80, 0.70]))
    assert s.refuse_probability(0) == 0.0
    assert s.refuse_probability(1) == 0.5
    assert s.refuse_probability(2) == 0.75
    assert s.refuse_probability(3) == 1.0
    assert s.try_acquire()          # 0 pending: no draw
    assert not s.try_acquire()      # 1 pending, p=.5, draw .49 -> refused
    assert s.try_acquire()          # p=.5, draw .51 -> admitted
    assert s.try_acquire()          # 2 pending, p=.75, draw .80 -> admitted
    assert not s.try_acquire()      # 3 pending = full: refused without a draw
    assert s.pending == 3


def test_slot_context_releases():
    s = Startups((1, 100, 1))
    with s.slot():
        with pytest.raises(StartupRefused):
            with s.slot():
                pass
    assert s.pending == 0
