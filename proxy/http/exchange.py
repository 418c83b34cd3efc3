"""One request/response exchange of a client connection: its state, written down in one table.

A connection (:mod:`proxy.http.connection`) makes one :class:`Exchange` per request head (or per
request it refuses while parsing). The exchange holds everything that belongs to that request
alone (its head, body bookkeeping, the gate's decision, how its response is framed, timings),
so nothing is reset by hand between requests: the next request gets a fresh exchange.

Its life is a small state machine. :data:`TRANSITIONS` is the only place that says which
event may happen in which state; :meth:`Exchange.advance` applies it and raises
:class:`IllegalTransition` (an internal error: a bug in the engine, never a client's fault)
for anything else::

    QUEUED --DECIDE_LATER--> DECIDING          (the gate answered with a Deferred)
    QUEUED/DECIDING --FORWARD--> CONNECTING    (an upstream connection is asked for)
    QUEUED/DECIDING --COLLECT--> COLLECTING    (the body is read before anything is done)
    COLLECTING --FORWARD--> CONNECTING
    QUEUED/DECIDING/COLLECTING --HANDLE_LATER--> HANDLING   (a local handler's Deferred)
    QUEUED/DECIDING/COLLECTING/HANDLING --ANSWER--> DONE    (a local answer, written whole)
    CONNECTING --UPSTREAM_READY--> UPSTREAM    (the request head went upstream)
    UPSTREAM --RETRY--> CONNECTING             (a stale pooled connection: once, on a fresh one)
    UPSTREAM --RESPONSE_HEAD--> RELAYING --RESPONSE_DONE--> DONE
    UPSTREAM --UPGRADE--> TUNNEL               (a validated 101: the connection is a tunnel now)
    any state but DONE/TUNNEL/FAILED --FAIL--> FAILED   (an error answered, or the exchange dropped)

The request body is a second, independent dimension (``complete`` and ``body_mode``): a body
may still arrive while the response is relayed, or after a local answer (then it is discarded).
What happens to its bytes is a :class:`Body` mode, and :data:`BODY_CHANGES` is the only place
that says which mode may follow which; :meth:`Exchange.switch_body` applies it and raises
:class:`IllegalBodyChange` for anything else::

    BUFFER --> COLLECT            (the decision reads the body first: a Local, or a chunked Forward)
    BUFFER --> DISCARD            (answered locally while the body still comes)
    BUFFER --> STREAM / CHUNKED   (the request went upstream; its body follows as it comes)
    COLLECT --> BUFFER            (collected whole: held for the handler or the upstream)
    COLLECT/DISCARD/CHUNKED --> IGNORE   (past its limit: 413, or the connection closes)

States and events are small ints (an :class:`enum.IntEnum` names them): the table is compiled to
tuples so a transition costs two index operations on the keep-alive path.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from proxy.http.messages import BodyRewriter, Forward, Local, RequestHead
    from proxy.http.wire import HeadFacts


class State(IntEnum):
    QUEUED = 0  # head parsed; waits for the requests before it (pipelining) or for the gate
    DECIDING = 1  # the gate's decision is a Deferred not fired yet
    COLLECTING = 2  # the body is read (bounded) before it is handled locally or forwarded
    HANDLING = 3  # a local handler's Deferred not fired yet
    CONNECTING = 4  # waiting for an upstream connection (connect, or a free one in the pool)
    UPSTREAM = 5  # the request went upstream (its body may still stream); no response head yet
    RELAYING = 6  # the response head went to the client; the body is relayed
    DONE = 7  # answered completely
    TUNNEL = 8  # a WebSocket tunnel replaced HTTP on this connection
    FAILED = 9  # answered with an error (or dropped); the connection closes or goes on as it says


class Event(IntEnum):
    DECIDE_LATER = 0
    FORWARD = 1
    COLLECT = 2
    HANDLE_LATER = 3
    ANSWER = 4
    UPSTREAM_READY = 5
    RETRY = 6
    RESPONSE_HEAD = 7
    RESPONSE_DONE = 8
    UPGRADE = 9
    FAIL = 10


S, E = State, Event

#: The one table of legal transitions: state -> {event: next state}. Anything absent is illegal.
TRANSITIONS: dict[State, dict[Event, State]] = {
    S.QUEUED: {E.DECIDE_LATER: S.DECIDING, E.FORWARD: S.CONNECTING, E.COLLECT: S.COLLECTING,
               E.HANDLE_LATER: S.HANDLING, E.ANSWER: S.DONE, E.FAIL: S.FAILED},
    S.DECIDING: {E.FORWARD: S.CONNECTING, E.COLLECT: S.COLLECTING, E.HANDLE_LATER: S.HANDLING,
                 E.ANSWER: S.DONE, E.FAIL: S.FAILED},
    S.COLLECTING: {E.FORWARD: S.CONNECTING, E.HANDLE_LATER: S.HANDLING, E.ANSWER: S.DONE, E.FAIL: S.FAILED},
    S.HANDLING: {E.ANSWER: S.DONE, E.FAIL: S.FAILED},
    S.CONNECTING: {E.UPSTREAM_READY: S.UPSTREAM, E.FAIL: S.FAILED},
    S.UPSTREAM: {E.RESPONSE_HEAD: S.RELAYING, E.UPGRADE: S.TUNNEL, E.RETRY: S.CONNECTING, E.FAIL: S.FAILED},
    S.RELAYING: {E.RESPONSE_DONE: S.DONE, E.FAIL: S.FAILED},
    S.DONE: {},
    S.TUNNEL: {},
    S.FAILED: {},
}

#: TRANSITIONS compiled: _NEXT[state][event] is the next state, or -1 when illegal.
_NEXT: tuple[tuple[int, ...], ...] = tuple(
    tuple(int(TRANSITIONS[s].get(e, -1)) for e in Event) for s in State)

# Plain-int aliases for the hot path (attribute access on an Enum class is slow).
QUEUED, DECIDING, COLLECTING, HANDLING, CONNECTING, UPSTREAM, RELAYING, DONE, TUNNEL, FAILED = (int(s) for s in State)
(DECIDE_LATER, FORWARD, COLLECT, HANDLE_LATER, ANSWER, UPSTREAM_READY, RETRY, RESPONSE_HEAD, RESPONSE_DONE, UPGRADE,
 FAIL) = (int(e) for e in Event)

# The three steps of every forwarded response, read from the table. Callers check the from-state
# first (a stale upstream callback is ignored, not an error) and then set the state directly: the
# keep-alive path saves a call per step. Everything else goes through Exchange.advance.
READY_STATE = _NEXT[CONNECTING][UPSTREAM_READY]  # CONNECTING --UPSTREAM_READY-->
HEAD_STATE = _NEXT[UPSTREAM][RESPONSE_HEAD]  # UPSTREAM --RESPONSE_HEAD-->
DONE_STATE = _NEXT[RELAYING][RESPONSE_DONE]  # RELAYING --RESPONSE_DONE-->


class Body(IntEnum):
    """What happens to request-body bytes as the parser delivers them (``Exchange.body_mode``)."""

    BUFFER = 0  # held in ``chunks`` until the request is decided (bounded by the connection)
    COLLECT = 1  # collected in ``chunks`` up to ``limit`` (else 413), then handled or forwarded
    DISCARD = 2  # counted and dropped (after a local answer); past ``limit`` the connection closes
    STREAM = 3  # written upstream as received (Content-Length framing)
    CHUNKED = 4  # re-chunked upstream as received, up to ``limit`` (else 413)
    IGNORE = 5  # dropped silently (the exchange failed; the connection is closing)


B = Body

#: The one table of legal body-mode changes: mode -> the modes it may change to. Anything absent
#: is illegal (STREAM and IGNORE last until the body ends).
BODY_CHANGES: dict[Body, frozenset[Body]] = {
    B.BUFFER: frozenset({B.COLLECT, B.DISCARD, B.STREAM, B.CHUNKED}),
    B.COLLECT: frozenset({B.BUFFER, B.IGNORE}),
    B.DISCARD: frozenset({B.IGNORE}),
    B.STREAM: frozenset(),
    B.CHUNKED: frozenset({B.IGNORE}),
    B.IGNORE: frozenset(),
}

#: BODY_CHANGES compiled: _BODY_OK[mode][new] is True when the change is legal.
_BODY_OK: tuple[tuple[bool, ...], ...] = tuple(tuple(n in BODY_CHANGES[m] for n in Body) for m in Body)

# Plain-int aliases: the reader compares the mode once per body chunk.
B_BUFFER, B_COLLECT, B_DISCARD, B_STREAM, B_CHUNKED, B_IGNORE = (int(b) for b in Body)


class IllegalTransition(RuntimeError):
    """An event the exchange's state does not allow: a bug in the HTTP engine."""

    def __init__(self, state: int, event: int) -> None:
        super().__init__(f"internal error: event {Event(event).name} is not allowed in state {State(state).name}")
        self.state = State(state)
        self.event = Event(event)


class IllegalBodyChange(RuntimeError):
    """A body-mode change :data:`BODY_CHANGES` does not allow: a bug in the HTTP engine."""

    def __init__(self, mode: int, new: int) -> None:
        super().__init__(f"internal error: the request body may not change from {Body(mode).name} to {Body(new).name}")
        self.mode = Body(mode)
        self.new = Body(new)


class Exchange:
    """The state of one request and its response (see the module docstring).

    Guarantees: ``state`` only changes along :data:`TRANSITIONS`: through :meth:`advance`, or on the
    three hot steps of a forwarded response to the table's target after the caller checked the
    from-state (``READY_STATE``, ``HEAD_STATE``, ``DONE_STATE``). ``body_mode`` only changes along
    :data:`BODY_CHANGES`, through :meth:`switch_body`. Does not check the body dimension
    (``complete``, ``body_mode``) against the state.
    """

    __slots__ = ("head", "facts", "state", "complete", "chunks", "buffered", "body_mode", "received", "limit",
                 "error", "retried", "raw_target", "t0", "status", "t_up", "t_head", "out_bytes", "fwd", "local",
                 "dechunk", "up_head", "rechunk", "resp_close", "resp_framing", "rewriter")

    def __init__(self, head: RequestHead | None, facts: HeadFacts | None, error: int = 0) -> None:
        self.head = head
        self.facts = facts
        self.state = QUEUED
        self.complete = False  # the whole request body was received
        self.chunks: list[bytes] = []
        self.buffered = 0  # bytes in ``chunks`` counted against the connection's buffer
        self.body_mode = B_BUFFER
        self.received = 0  # body bytes received (collected, streamed or discarded)
        self.limit: int | None = None  # most body bytes accepted (None: no limit)
        self.error = error  # refused while parsing: the status to answer
        self.retried = False
        self.raw_target = b""  # the target as received (forwarded only by unsafe_forward_raw_target)
        self.t0 = 0.0  # when the gate got it; t_up: upstream connection ready; t_head: response head
        self.status = 0
        self.t_up = 0.0
        self.t_head = 0.0
        self.out_bytes = 0  # response body bytes sent to the client
        self.fwd: Forward | None = None  # the Forward decision, once made
        self.local: Local | None = None  # the Local decision whose body is being collected
        self.dechunk = False  # a collected chunked body goes upstream with Content-Length
        self.up_head = b""  # the request head as it goes upstream
        self.rechunk = False  # the response body is re-chunked for the client
        self.resp_close = False  # the connection closes after this response
        self.resp_framing = 0  # the upstream response's framing (proxy.http.upstream F_*)
        self.rewriter: BodyRewriter | None = None  # rewrites this response's body (the decision's rewrite)

    def advance(self, event: int) -> int:
        """Apply ``event``; returns the new state. Raises :class:`IllegalTransition` if not allowed."""
        nxt = _NEXT[self.state][event]
        if nxt < 0:
            raise IllegalTransition(self.state, event)
        self.state = nxt
        return nxt

    def switch_body(self, mode: int) -> None:
        """Route the rest of the body by ``mode``. Raises :class:`IllegalBodyChange` if not allowed."""
        if not _BODY_OK[self.body_mode][mode]:
            raise IllegalBodyChange(self.body_mode, mode)
        self.body_mode = mode

    @property
    def finished(self) -> bool:
        """True in a terminal state (DONE, TUNNEL, FAILED)."""
        return self.state >= DONE

    def __repr__(self) -> str:
        return f"<Exchange {State(self.state).name}>"
