"""The exchange's tables (proxy.http.exchange): its states and its request body's modes; every legal change
taken, every illegal one refused."""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

from proxy.http.exchange import (_BODY_OK, _NEXT, B_BUFFER, B_CHUNKED, B_COLLECT, B_DISCARD, B_IGNORE, B_STREAM,
                                 BODY_CHANGES, TRANSITIONS, Body, Event, Exchange, IllegalBodyChange,
                                 IllegalTransition, State)

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


# --------------------------------------------------------------------------- the request body's modes


def _body_path_to(target: Body) -> list[Body]:
    """The shortest chain of modes from BUFFER to ``target`` (breadth-first over BODY_CHANGES)."""
    seen: dict[Body, list[Body]] = {Body.BUFFER: []}
    todo = deque([Body.BUFFER])
    while todo:
        m = todo.popleft()
        for nxt in sorted(BODY_CHANGES[m]):
            if nxt not in seen:
                seen[nxt] = seen[m] + [nxt]
                todo.append(nxt)
    return seen[target]


def _body_at(mode: Body) -> Exchange:
    ex = Exchange(None, None)
    assert ex.body_mode == Body.BUFFER  # every exchange starts by holding its body
    for m in _body_path_to(mode):
        ex.switch_body(m)
    assert ex.body_mode == mode
    return ex


def test_body_table_covers_every_mode() -> None:
    assert set(BODY_CHANGES) == set(Body)
    for m, nexts in BODY_CHANGES.items():
        assert nexts <= set(Body) and m not in nexts, f"{m.name}: a mode never changes to itself"
    assert [int(b) for b in Body] == [B_BUFFER, B_COLLECT, B_DISCARD, B_STREAM, B_CHUNKED, B_IGNORE]


def test_every_body_mode_is_reachable_from_buffer() -> None:
    for m in Body:
        _body_at(m)


@pytest.mark.parametrize("mode", list(Body), ids=lambda m: m.name)
def test_walk_every_body_change(mode: Body) -> None:
    """From each mode: each legal change happens; each other one raises and changes nothing."""
    for new in Body:
        ex = _body_at(mode)
        if new in BODY_CHANGES[mode]:
            ex.switch_body(new)
            assert ex.body_mode == new
        else:
            with pytest.raises(IllegalBodyChange) as err:
                ex.switch_body(new)
            assert err.value.mode is mode and err.value.new is new
            assert f"may not change from {mode.name} to {new.name}" in str(err.value)
            assert ex.body_mode == mode


def test_compiled_body_table_matches_the_written_one() -> None:
    for m in Body:
        for n in Body:
            assert _BODY_OK[m][n] == (n in BODY_CHANGES[m])


def test_the_engine_changes_body_modes_only_through_the_table() -> None:
    """No module of the engine assigns ``body_mode`` but the exchange itself (its start, and switch_body)."""
    root = Path(__file__).resolve().parents[2] / "proxy" / "http"
    found = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            found += [f"{path.name}:{node.lineno}" for t in targets
                      if isinstance(t, ast.Attribute) and t.attr == "body_mode"]
    assert len(found) == 2 and all(f.startswith("exchange.py:") for f in found), found


def _engine_changes(monkeypatch: pytest.MonkeyPatch) -> set[tuple[Body, Body]]:
    """Run the engine (tests.harness.engine) through every way a request body goes; the changes it made."""
    from proxy.http.messages import Local, json_response, text_response
    from tests.harness.engine import Harness

    seen: set[tuple[Body, Body]] = set()
    switch = Exchange.switch_body

    def recording(ex: Exchange, mode: int) -> None:
        seen.add((Body(ex.body_mode), Body(mode)))
        switch(ex, mode)

    monkeypatch.setattr(Exchange, "switch_body", recording)
    head_cl = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n"
    head_te = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"8\r\n" + b"x" * 8 + b"\r\n"

    h = Harness()  # a Local handler: collected (COLLECT), then held for it (BUFFER)
    h.gate.next = lambda head: Local(lambda *a: json_response(200, {}), max_body=100)
    h.send(head_cl + b"abc")
    h.send(b"def")
    assert b"200 OK" in h.out()
    h = Harness()  # a Local handler's chunked body past its limit: 413 (IGNORE)
    h.gate.next = lambda head: Local(lambda *a: json_response(200, {}), max_body=4)
    h.send(head_te + chunk)
    assert b"413" in h.out()
    h = Harness({"limits": {"max_body_unauthenticated": 10}})  # answered locally: DISCARD, past the limit IGNORE
    h.gate.next = lambda head: text_response(401, "login required")
    h.send(head_te)
    h.send(chunk + chunk)
    assert b"401" in h.out() and h.client.lost
    h = Harness()  # forwarded (the harness's gate forwards by default) with Content-Length: STREAM
    h.send(head_cl)
    h.connect_upstream()
    h = Harness({"limits": {"max_body": 10}})  # forwarded chunked: CHUNKED; past the limit IGNORE
    h.send(head_te)
    h.connect_upstream()
    h.send(chunk + chunk)
    assert b"413" in h.out()
    return seen


def test_the_engine_makes_every_legal_body_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every change in BODY_CHANGES is one the engine makes (the table allows nothing it never does)."""
    table = {(m, n) for m, nexts in BODY_CHANGES.items() for n in nexts}
    assert _engine_changes(monkeypatch) == table
