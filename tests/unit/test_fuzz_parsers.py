"""Issue 12: property-based fuzzing of Cockpit's frame parsers and the config parser.

Fixed seed (``derandomize``), bounded example counts, no example database: the same inputs
on every run, a few seconds in all. Properties: no crash (only the parser's own error type),
no hang (pytest-timeout bounds each test; inputs claiming huge lengths are not buffered),
and every error is one clean line.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from proxy.config import SCHEMA, ConfigError, parse_config
from proxy.frontdoors.cockpit_auth import FrameError, FrameReader, encode_frame, parse_control
from proxy.frontdoors.wsframes import (MAX_CONTROL_MESSAGE, ClientFrameParser, FrameProtocolError, LogoutWatcher,
                                       is_logout)

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
pytestmark = pytest.mark.timeout(120)


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "\r" not in message and len(message) < 1000


# ----------------------------------------------------------------- WebSocket client frames

def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = b"\x01\x02\x03\x04",
             rsv: int = 0) -> bytes:
    """A masked client frame (RFC 6455)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return out


def feed_all(parser: ClientFrameParser, parts: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for part in parts:
        out += parser.feed(part)
    return out


@FUZZ
@given(st.binary(max_size=2048), st.lists(st.integers(0, 4096), max_size=8))
def test_ws_parser_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    """Any byte stream: messages or FrameProtocolError (one line), the same however it is split."""
    try:
        whole: list[bytes] | str = ClientFrameParser().feed(data)
    except FrameProtocolError as e:
        assert one_line(str(e))
        whole = "error"
    try:
        split: list[bytes] | str = feed_all(ClientFrameParser(), chunks(data, cuts))
    except FrameProtocolError:
        split = "error"
    assert split == whole


messages = st.lists(st.tuples(st.sampled_from([0x1, 0x2, 0x9, 0xA]), st.binary(max_size=300),
                              st.integers(1, 3), st.binary(min_size=4, max_size=4)), max_size=12)


@FUZZ
@given(messages, st.lists(st.integers(0, 8192), max_size=10))
def test_ws_parser_returns_exactly_the_small_text_messages(msgs: list[tuple[int, bytes, int, bytes]],
                                                           cuts: list[int]) -> None:
    """Valid streams (fragmented, any masks, pings between): every small text message, in order."""
    stream, expected = b"", []
    for opcode, payload, pieces, mask in msgs:
        if opcode >= 0x8:
            stream += ws_frame(opcode, payload[:125], mask=mask)
            continue
        size = max(1, -(-len(payload) // pieces))
        parts = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
        for i, part in enumerate(parts):
            stream += ws_frame(opcode if i == 0 else 0x0, part, fin=i == len(parts) - 1, mask=mask)
            if i == 0 and len(parts) > 1:
                stream += ws_frame(0x9, b"ping", mask=mask)  # control frames may interleave
        if opcode == 0x1 and len(payload) <= MAX_CONTROL_MESSAGE:
            expected.append(payload)
    assert feed_all(ClientFrameParser(), chunks(stream, cuts)) == expected


def test_ws_parser_does_not_buffer_a_huge_frame() -> None:
    """A frame claiming 2**63-1 bytes is skipped by length: memory stays flat, no hang."""
    parser = ClientFrameParser()
    head = bytes([0x81, 0x80 | 127]) + struct.pack(">Q", 2 ** 63 - 1) + b"mask"
    assert parser.feed(head) == []
    block = os.urandom(1 << 16)
    for _ in range(64):  # 4 MiB of payload
        assert parser.feed(block) == []
    assert parser._msg is None and parser._hdr == b""


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(0, 1024), max_size=6))
def test_logout_watcher_never_raises(data: bytes, cuts: list[int]) -> None:
    calls: list[int] = []
    w = LogoutWatcher(lambda: calls.append(1))
    for part in chunks(data, cuts):
        w.feed(part)
    assert len(calls) <= 1 and (w.error is None or one_line(w.error))


@FUZZ
@given(st.binary(max_size=200))
def test_is_logout_never_raises(data: bytes) -> None:
    assert is_logout(data) in (True, False)
    assert is_logout(b"\n" + data) in (True, False)


# ----------------------------------------------------------------- cockpit-ws auth frames

def reader_over(data: bytes, cuts: list[int], max_frame: int = 65536) -> FrameReader:
    parts = iter([c for c in chunks(data, cuts) if c])  # b"" means end of stream
    return FrameReader(lambda n: next(parts, b""), max_frame=max_frame)


@FUZZ
@given(st.binary(max_size=1024), st.lists(st.integers(0, 2048), max_size=6))
def test_auth_frame_reader_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    """Frames, FrameError (one line) or EOFError; never more than max_frame bytes in a frame."""
    reader = reader_over(data, cuts, max_frame=512)
    for _ in range(50):
        try:
            channel, payload = reader.read_frame()
        except FrameError as e:
            assert one_line(str(e))
            return
        except EOFError:
            return
        assert len(channel.encode()) + 1 + len(payload) <= 512
        try:
            msg = parse_control(channel, payload)
        except FrameError as e:
            assert one_line(str(e))
        else:
            assert isinstance(msg["command"], str)


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=20).filter(lambda c: "\n" not in c), st.binary(max_size=300)),
                max_size=6), st.lists(st.integers(0, 4096), max_size=6))
def test_auth_frame_reader_round_trip(frames: list[tuple[str, bytes]], cuts: list[int]) -> None:
    data = b"".join(encode_frame(c, p) for c, p in frames)
    reader = reader_over(data, cuts)
    assert [reader.read_frame() for _ in frames] == frames
    with pytest.raises(EOFError):
        reader.read_frame()


def test_auth_frame_reader_refuses_a_huge_length_without_reading_it() -> None:
    reads: list[int] = []

    def read(n: int) -> bytes:
        reads.append(n)
        return b"99999999999999999999\n" if len(reads) == 1 else b"x" * n

    with pytest.raises(FrameError, match="more than 5 digits|exceeds the limit"):
        FrameReader(read).read_frame()
    assert len(reads) == 1


# ----------------------------------------------------------------- the config parser

SECTION_NAMES = [*SCHEMA, "trust", "route:a", "access:office", "account:alice", "bogus"]
KEYS = sorted({k for keys in SCHEMA.values() for k in keys} | {"store", "prefix", "url", "cns", "ip_ranges",
                                                                "mapping", "strip_domain", "required_auth_methods"})
values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "1e309", "nan", "inf", "yes", "no", "need", "want", "1.3", "memory",
                     "sqlite:", "redis://", "http://127.0.0.1:9", "https://[::1]:1/x", "/", "[[\"tls-cert\"]]",
                     "[[]]", "{", "10:30:100", "X-Remote-User", "Host", "a\n b", "%(x)s", "\x00", "\u202e"]),
)
lines = st.lists(st.one_of(
    st.builds(lambda s: f"[{s}]", st.sampled_from(SECTION_NAMES)),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(KEYS), values),
    st.text(max_size=30),
), max_size=25)


def check_config_text(text: str, path: Path) -> None:
    try:
        parse_config(text, path)
    except ConfigError as e:
        assert e.problems
        for p in e.problems:
            assert one_line(str(p)), str(p)
            assert str(p).startswith("[")


@FUZZ
@given(lines)
def test_config_parser_structured(body: list[str]) -> None:
    check_config_text("\n".join(body) + "\n", Path("/nonexistent/certgate.conf"))


@FUZZ
@given(st.text(max_size=400))
def test_config_parser_arbitrary_text(text: str) -> None:
    check_config_text(text, Path("/nonexistent/certgate.conf"))


@pytest.fixture(scope="module")
def valid_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A folder with the files a minimal valid config names, and that config's text."""
    d = tmp_path_factory.mktemp("fuzz-config")
    (d / "server.pem").write_text("x")
    (d / "server.key").write_text("x")
    (d / "trust.d").mkdir()
    text = (f"[listen]\ncertificate = {d}/server.pem\nkey = {d}/server.key\n[trust]\nstore = {d}/trust.d\n"
            "[upstream]\nurl = http://127.0.0.1:9\n")
    parse_config(text, d / "certgate.conf")  # the base itself is valid
    return d, text


@FUZZ
@given(lines)
def test_config_parser_mutating_a_valid_config(valid_base: tuple[Path, str], body: list[str]) -> None:
    """Random sections and keys appended to a valid config reach the value and cross checks."""
    folder, base = valid_base
    check_config_text(base + "\n".join(body) + "\n", folder / "certgate.conf")
