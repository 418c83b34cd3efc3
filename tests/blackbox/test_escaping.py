"""Issue 12: a client's control characters leave only escaped text in every log and page.

A real gateway, real handshakes: a client certificate from an unknown CA whose subject and
issuer are full of terminal escapes, CR, LF, NUL, DEL, C1 controls and bidi overrides is
refused (``need``) or explained (``want``); a request carries the same in its path, User-Agent
and other header values. The operational log file, the audit log file and the login page
(text and JSON), the audit log and the access log must hold none of those characters raw, and
the escaped text must be there.
"""

from __future__ import annotations

import json
import socket
import ssl
import unicodedata
from pathlib import Path

import pytest

from tests.harness.client import client_context, handshake_refused, request
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.pki import ClientCert, Pki
from tests.harness.upstream import RecordingUpstream
from tests.harness.wait import wait_for
from trust import issue as I

#: ESC/CSI colour, CR LF with a forged log line, NUL, DEL, C1 (NEL, CSI), BEL, OSC title,
#: bidi override and isolate, line separator, zero-width joiner.
EVIL = ("e\x1b[31mvil\r\n2026 [certgate#info]\x00\x7f\x85\x9b\x07"
        "\x1b]0;pw\x07\u202etx\u2066\u2028\u200d")  # names stay within X.509's 64 bytes
ESCAPED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def raw_controls(text: str, allowed: str = "\n\t") -> list[str]:
    """Every character of an escaped category in ``text`` except the ``allowed`` ones."""
    return sorted({repr(ch) for ch in text if ch not in allowed and unicodedata.category(ch) in ESCAPED})


def evil_client(pki: Pki) -> ClientCert:
    """A client certificate from an unknown CA; subject CN/O and issuer CN carry ``EVIL``."""
    rogue_ca = I.ca("R" + EVIL)
    issued = I.client(rogue_ca, ["alice" + EVIL])
    cert_path, key_path = issued.write(pki.folder / "evil", "evil")
    return ClientCert("alice" + EVIL, cert_path, key_path, issued.fingerprint)


def _config(tmp_path: Path, pki: Pki, upstream: RecordingUpstream, client_auth: str) -> Path:
    return write_config(tmp_path, pki, upstream=upstream.url, extra={
        "listen": {"client_auth": client_auth},
        "log": {"level": "debug", "file": str(tmp_path / "certgate.log"), "json_file": str(tmp_path / "certgate.json"),
                "access_file": str(tmp_path / "access.log")},
        "audit": {"file": str(tmp_path / "audit.log")},
    })


def _raw_request(port: int, cert: ClientCert, path: bytes, headers: list[bytes]) -> bytes:
    ctx = client_context(cert, None)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 5), server_hostname="localhost") as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\nAccept: text/html\r\n"
                  + b"".join(h + b"\r\n" for h in headers) + b"Connection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


EVIL_UTF8 = "\u202e\u2066\u0085\u009b".encode()  # bidi and C1 controls: legal obs-text bytes in HTTP
EVIL_PATH = b"/%1b%5b31m%0d%0a%00%7f%c2%85%e2%80%ae" + b"?q=" + b"%1b%0d%0a"
EVIL_HEADERS = [b"User-Agent: Mozilla " + EVIL_UTF8, b"X-Remote-User: root" + EVIL_UTF8,
                b"Referer: https://x/" + EVIL_UTF8]


@pytest.fixture
def upstream():
    u = RecordingUpstream()
    yield u
    u.close()


def test_need_mode_refusal_is_logged_escaped(tmp_path: Path, pki: Pki, upstream: RecordingUpstream) -> None:
    cfg = _config(tmp_path, pki, upstream, "need")
    evil = evil_client(pki)
    with Gateway(cfg) as gw:
        assert handshake_refused(gw.port, evil, None)
        log = tmp_path / "certgate.log"
        wait_for(lambda: "refused: certificate" in log.read_text(errors="strict"), 10, what="the refusal line")
    text = log.read_text(encoding="utf-8")
    assert raw_controls(text) == []
    line = next(line for line in text.splitlines() if "refused: certificate" in line)
    assert "e\\x1b[31mvil\\x0d\\x0a2026 [certgate#info]\\00\\x7f\\x85\\x9b\\x07" in line  # \\00: RFC 4514
    assert "\\x1b]0\\;pw\\x07\\u202etx\\u2066\\u2028\\u200d" in line
    assert not any(line.startswith("2026 ") for line in text.splitlines())


def test_want_mode_page_logs_and_audit_hold_only_escaped_text(tmp_path: Path, pki: Pki,
                                                                upstream: RecordingUpstream) -> None:
    cfg = _config(tmp_path, pki, upstream, "want")
    evil = evil_client(pki)
    with Gateway(cfg) as gw:
        page = _raw_request(gw.port, evil, b"/.certgate/login", EVIL_HEADERS)
        denied = _raw_request(gw.port, evil, EVIL_PATH, EVIL_HEADERS)
        bad = _raw_request(gw.port, evil, b"/", [b"User-Agent: x\x1b[31m\x7f"])  # CTLs: not HTTP
        status, _, body = request(gw.port, "POST", "/.certgate/api/auth", cert=evil,
                                  headers={"Content-Type": "application/json"},
                                  body=json.dumps({"account": EVIL, "password": "x"}).encode())
        audit = tmp_path / "audit.log"
        wait_for(lambda: audit.exists() and '"deny"' in audit.read_text(), 10, what="an audit record")
    # the login page explains the refused certificate: escaped, then HTML-escaped
    head, _, html = page.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    html_text = html.decode("utf-8")
    assert raw_controls(html_text) == []
    assert "alicee\\x1b[31mvil\\x0d\\x0a" in html_text
    assert denied.startswith(b"HTTP/1.1 "), denied[:100]
    assert bad.startswith(b"HTTP/1.1 400 "), bad[:100]
    assert raw_controls(denied.partition(b"\r\n\r\n")[2].decode("utf-8")) == []
    assert status == 401 and raw_controls(json.dumps(json.loads(body), ensure_ascii=False)) == []
    for name in ("certgate.log", "certgate.json", "audit.log", "access.log"):
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert raw_controls(text) == [], name
    for name in ("certgate.json", "access.log"):  # JSON lines: the decoded values are escaped text too
        for line in (tmp_path / name).read_text().splitlines():
            assert raw_controls(json.dumps(json.loads(line), ensure_ascii=False)) == [], (name, line)
    paths = [json.loads(line).get("path") for line in (tmp_path / "access.log").read_text().splitlines()]
    assert "/%1b%5b31m%0d%0a%00%7f%c2%85%e2%80%ae" in paths  # the canonical target stays percent-encoded
    records = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    for rec in records:  # the decoded JSON values are escaped text too (for `jq -r`)
        assert raw_controls(json.dumps(rec, ensure_ascii=False)) == [], rec
    assert any((rec.get("account") or "").startswith("e\\x1b[31mvil\\x0d\\x0a") for rec in records), records
    assert upstream.requests == []
