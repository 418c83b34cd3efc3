"""Issue 12: one escaping helper (trust.escape) and a test per sink that uses it."""

from __future__ import annotations

import io
import json
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from twisted.logger import Logger, LogPublisher

from trust.escape import safe_html, safe_json, safe_lines, safe_text

EVIL = "e\x1b[31mvil\r\nforged line\x00\x7f\x85\x9b\x07\u202etxt\u2066\u2028\u2029\u200d\ufeff\\"
ESCAPED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def raw_controls(text: str, allowed: str = "") -> list[str]:
    return sorted({repr(ch) for ch in text if ch not in allowed and unicodedata.category(ch) in ESCAPED})


def test_safe_text_escapes_every_class() -> None:
    out = safe_text(EVIL, backslash=True)
    assert out == ("e\\x1b[31mvil\\x0d\\x0aforged line\\x00\\x7f\\x85\\x9b\\x07\\u202etxt\\u2066\\u2028\\u2029"
                   "\\u200d\\ufeff\\\\")
    assert safe_text(EVIL).endswith("\\ufeff\\")  # backslashes kept by default
    assert safe_text("Zoë\u0430\\", backslash=True, ascii_only=True) == "Zo\\xeb\\u0430\\\\"
    assert safe_text(b"ok\xff\x1b") == "ok\\xff\\x1b"  # undecodable bytes and controls in bytes
    assert safe_text("\U000e0001") == "\\U000e0001"  # a tag character (Cf) beyond the BMP


@pytest.mark.parametrize("text", ["alice", "Zoë Ångström", "José-María O'Brien", "日本語 テスト", "CN=a,O=b c",
                                  "Ελληνικά", "😀 emoji"])
def test_printable_text_is_unchanged(text: str) -> None:
    assert safe_text(text) == text and safe_html(text) == text.replace("'", "&#x27;")


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text())
def test_safe_text_never_leaves_a_control(text: str) -> None:
    out = safe_text(text)
    assert raw_controls(out) == []
    assert raw_controls(safe_lines(text), "\n\t") == []
    if text.isprintable() and "\\" not in text:
        assert out == text


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text())
def test_safe_text_is_reversible(text: str) -> None:
    """With backslashes doubled, the escaped text decodes back to exactly what was sent."""
    escaped = safe_text(text, backslash=True, ascii_only=True)
    assert escaped.isascii() and escaped.encode().decode("unicode_escape") == text


# ---- sinks -----------------------------------------------------------------------------

def test_operational_log_sink() -> None:
    from proxy.observe.logs import EscapingObserver, text_observer

    buf = io.StringIO()
    log = Logger(namespace="certgate", observer=LogPublisher(EscapingObserver(text_observer(buf))))
    log.info("TLS handshake refused: certificate {subject} from {peer} ({n} tries)", subject="CN=" + EVIL,
             peer=b"10.0.0.1\r\n", n=3)
    text = buf.getvalue()
    assert text.count("\n") == 1 and raw_controls(text, "\n") == []
    assert "CN=e\\x1b[31mvil\\x0d\\x0aforged line" in text and "(3 tries)" in text


def test_audit_log_sink() -> None:
    from proxy.observe.audit import Audit

    buf = io.StringIO()
    Audit(buf, now=lambda: 1.0).record("login", "deny", "certificate-invalid", account=EVIL, path="/" + EVIL,
                                       user_agent=EVIL.encode())
    line = buf.getvalue()
    assert line.count("\n") == 1 and line.isascii()
    rec = json.loads(line)
    for key in ("account", "path", "user_agent"):
        assert raw_controls(rec[key]) == [], key
    assert rec["account"] == safe_text(EVIL)


def test_cockpit_auth_stderr_sink(capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.frontdoors import cockpit_auth

    cockpit_auth._log(f"refused problem=authentication-failed account={EVIL}: bad")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and raw_controls(err, "\n") == []
    assert "account=e\\x1b[31mvil\\x0d\\x0a" in err


def test_gate_error_page_sink() -> None:
    from proxy.gate.decide import error_page
    from proxy.http.messages import RequestHead

    html_head = RequestHead(b"GET", b"/", b"1.1", [(b"accept", b"text/html")])
    page = error_page(html_head, 403, "code<" + EVIL, "Title " + EVIL, "message <b>" + EVIL).body.decode()
    assert raw_controls(page, "\n") == [] and "<b>" not in page and "&lt;b&gt;" in page
    json_head = RequestHead(b"GET", b"/", b"1.1", [])
    body = json.loads(error_page(json_head, 403, "c", "T", EVIL).body)
    assert body["message"] == safe_text(EVIL)


def test_login_page_escapes_the_certificate() -> None:
    from proxy.login import pages

    assert pages._e("<" + EVIL) == "&lt;" + safe_text(EVIL)


@pytest.mark.parametrize("sink", ["messages", "admin", "presence"])
def test_json_sinks(sink: str) -> None:
    obj: dict[str, Any] = {"account": EVIL, "subject": "CN=" + EVIL, "sans": [EVIL], EVIL: 1, "n": 2, "ok": True}
    if sink == "messages":
        from proxy.http.messages import json_response

        body = json_response(200, obj).body
    elif sink == "admin":
        from proxy.ops.admin import _json

        body = _json(200, obj).body
    else:
        from proxy.sessions.presence import _json as presence_json

        body = presence_json(200, obj).body
    assert raw_controls(json.dumps(json.loads(body), ensure_ascii=False)) == []
    assert json.loads(body)["n"] == 2 and json.loads(body)["sans"] == [safe_text(EVIL)]


def test_safe_json_keeps_numbers_and_structure() -> None:
    assert safe_json({"a": [1, 2.5, None, True, ("x\n",)]}) == {"a": [1, 2.5, None, True, ["x\\x0a"]]}


def test_front_door_answers_escape_account_and_reason_phrase() -> None:
    from proxy.frontdoors.cockpit_wire import answer
    from proxy.frontdoors.joc import joc_denied, joc_error

    resp = answer(401, "authentication-failed", "account " + EVIL)
    assert b"\r" not in resp.reason and b"\n" not in resp.reason and resp.reason.isascii()
    for body in (resp.body, joc_denied(EVIL).body, joc_error(401, EVIL).body):
        assert raw_controls(json.dumps(json.loads(body), ensure_ascii=False)) == []


def test_sessions_cli_table_escapes_accounts() -> None:
    from proxy.ops.sessions_cli import _table

    row = {"id": "a" * 64, "account": EVIL, "fingerprint": "f" * 64, "created_at": 0, "proved_at": 0,
           "ends_at": 0, "trusted": False, "client_ip": "10.0.0.1\x1b[2J", "state": "live", "end_reason": None}
    out = _table([row])
    assert out.count("\n") == 1 and raw_controls(out, "\n") == [] and "e\\x1b[31mvil" in out


def test_cockpit_auth_user_check_refuses_a_nul_name_without_a_traceback() -> None:
    from proxy.frontdoors.cockpit_auth import local_user_check

    why = local_user_check(frozenset())("root\x00x")
    assert why is not None and "is not a valid user name" in why and "\x00" not in why


def test_access_log_strings() -> None:
    from proxy.observe.accesslog import _s

    encoded = _s(EVIL)
    assert encoded.isascii() and json.loads(encoded) == safe_text(EVIL) and _s(None) == "null"
