"""The exchange's state table (proxy.http.exchange): every legal transition taken, every illegal one refused."""

from __future__ import annotations

from collections import deque

import pytest

from proxy.http.exchange import _NEXT, TRANSITIONS, Event, Exchange, IllegalTransition, State

TERMINAL = {State.DONE, State.TUNNEL, State.FAILED}


def _path_to(target: State) -> list[Event]:
    """The shortest event sequence from QUEUED to ``target`` (breadth-first over the table)."""
    seen = {State.QUEUED: []}  # type: dict[State, list[Event]]
    todo = deque([State.QUEUED])
    while todo:
        s = todo.popleft()
        for ev, nxt in TRANSITIONS[s].items():
            if nxt not in seen:
                seen[nxt] = seen[s] + [ev]
                todo.append(nxt)
    return seen[target]


def _at(state: State) -> Exchange:
    ex = Exchange(None, None)
    for ev in _path_to(state):
        ex.advance(ev)
    assert ex.state == state
    return ex


def test_table_covers_every_state_and_only_known_events() -> None:
    assert set(TRANSITIONS) == set(State)
    for s, row in TRANSITIONS.items():
        assert set(row) <= set(Event)
        assert (s in TERMINAL) == (not row), f"{s.name}: terminal states have no way out, others have one"


def test_every_state_is_reachable_from_queued() -> None:
    for s in State:
        _at(s)


def test_every_non_terminal_state_can_fail() -> None:
    for s in set(State) - TERMINAL:
        assert TRANSITIONS[s][Event.FAIL] is State.FAILED


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_walk_every_pair(state: State) -> None:
    """From each state: each legal event leads where the table says; each other event raises."""
    for ev in Event:
        ex = _at(state)
        legal = TRANSITIONS[state].get(ev)
        if legal is not None:
            assert ex.advance(ev) == legal
            assert ex.state == legal
            assert ex.finished == (legal in TERMINAL)
        else:
            with pytest.raises(IllegalTransition) as err:
                ex.advance(ev)
            assert err.value.state is state and err.value.event is ev
            assert f"event {ev.name} is not allowed in state {state.name}" in str(err.value)
            assert ex.state == state  # an illegal event changes nothing


def test_compiled_table_matches_the_written_one() -> None:
    for s in State:
        for ev in Event:
            assert _NEXT[s][ev] == int(TRANSITIONS[s].get(ev, -1))


def test_a_keep_alive_forward_takes_four_transitions() -> None:
    ex = Exchange(None, None)
    for ev in (Event.FORWARD, Event.UPSTREAM_READY, Event.RESPONSE_HEAD, Event.RESPONSE_DONE):
        ex.advance(ev)
    assert ex.state == State.DONE and ex.finished


def test_hot_step_targets_come_from_the_table() -> None:
    from proxy.http.exchange import DONE_STATE, HEAD_STATE, READY_STATE

    assert READY_STATE == TRANSITIONS[State.CONNECTING][Event.UPSTREAM_READY]
    assert HEAD_STATE == TRANSITIONS[State.UPSTREAM][Event.RESPONSE_HEAD]
    assert DONE_STATE == TRANSITIONS[State.RELAYING][Event.RESPONSE_DONE]
