"""Policy reaches the HTTP engine as data on the decision: proxy.http imports no policy module,
the gate's ForwardPolicy fills Forward.body / Forward.rewrite, and a Forward nobody filled fails closed."""

from __future__ import annotations

import ast
from pathlib import Path

from proxy.gate.policy import ForwardPolicy
from proxy.sessions.injection import PresenceInjection, PresenceRewrites
from proxy.http.messages import NO_BODY, Forward, RequestHead
from tests.harness.config import engine_config
from tests.harness.engine import Harness

HTTP = Path(__file__).resolve().parents[2] / "proxy" / "http"
POLICY_PACKAGES = ("proxy.gate", "proxy.sessions", "proxy.login", "proxy.frontdoors")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_engine_imports_no_policy_module() -> None:
    files = sorted(HTTP.glob("*.py"))
    assert len(files) > 10
    for f in files:
        bad = [m for m in _imports(f) if m.startswith(POLICY_PACKAGES)]
        assert not bad, f"{f.name} imports {bad}"


def _head(method: bytes = b"GET") -> RequestHead:
    return RequestHead(method, b"/", b"1.1", [(b"Host", b"a")])


def test_body_rule_by_authentication() -> None:
    cfg = engine_config("http://upstream.test:8080", {"limits": {"max_body": 1000, "max_body_unauthenticated": 10}})
    p = ForwardPolicy(cfg)
    route = cfg.default_route
    anon = p.apply(Forward(route), _head())
    assert (anon.body.limit, anon.body.stream) == (10, False)
    for fwd in (Forward(route, account="alice"), Forward(route, session_id="s")):
        authed = p.apply(fwd, _head())
        assert (authed.body.limit, authed.body.stream) == (1000, True)
    no_cap = ForwardPolicy(engine_config("http://upstream.test:8080", {"limits": {"max_body": 0}}))
    assert no_cap.apply(Forward(route, account="a"), _head()).body.limit is None


def test_presence_rewrite_only_for_session_gets_on_covered_kinds() -> None:
    """The presence chooser (sessions layer) picks the rewrite; the gate's policy only carries it."""
    cfg = engine_config("http://upstream.test:8080", {"sessions": {"inject_presence_script": True}})
    p = ForwardPolicy(cfg, PresenceRewrites(cfg.sessions))
    route = cfg.default_route
    in_session = p.apply(Forward(route, session_id="s"), _head())
    assert isinstance(in_session.rewrite, PresenceInjection) and not in_session.rewrite.await_session
    waiting = p.apply(Forward(route, presence_await=True), _head())
    assert isinstance(waiting.rewrite, PresenceInjection) and waiting.rewrite.await_session
    assert p.apply(Forward(route, session_id="s"), _head(b"POST")).rewrite is None
    assert p.apply(Forward(route, account="a"), _head()).rewrite is None
    off_cfg = engine_config("http://upstream.test:8080", {"sessions": {"inject_presence_script": False}})
    off = ForwardPolicy(off_cfg, PresenceRewrites(off_cfg.sessions))
    assert off.apply(Forward(route, session_id="s"), _head()).rewrite is None
    assert ForwardPolicy(cfg).apply(Forward(route, session_id="s"), _head()).rewrite is None  # no chooser: none


def test_a_forward_without_policy_accepts_no_body() -> None:
    """A Forward that bypassed the gate's policy (NO_BODY) refuses any request body: 413."""
    h = Harness()
    h.gate.decide = lambda head, conn: Forward(h.config.default_route, account="alice")  # type: ignore[method-assign]
    assert Forward(h.config.default_route).body is NO_BODY
    h.send(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    assert h.out().startswith(b"HTTP/1.1 413 ")
    assert h.pending_connects == 0
