"""The client -> cockpit-ws WebSocket frame parser and the logout detection."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.frontdoors.wsframes import ClientFrameParser, FrameProtocolError, LogoutWatcher, is_logout

LOGOUT = b'\n' + json.dumps({"command": "logout", "disconnect": True}).encode()


def masked(payload: bytes, opcode: int = 0x1, fin: bool = True, mask: bytes | None = None) -> bytes:
    """A client frame (masked, as RFC 6455 requires)."""
    mask = mask or os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        hdr = bytes((b0, 0x80 | n))
    elif n < 65536:
        hdr = bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        hdr = bytes((b0, 0x80 | 127)) + n.to_bytes(8, "big")
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_single_text_frame() -> None:
    assert ClientFrameParser().feed(masked(LOGOUT)) == [LOGOUT]


def test_fragmented_with_interleaved_ping_and_byte_by_byte() -> None:
    data = (masked(LOGOUT[:5], fin=False) + masked(b"hi", opcode=0x9) + masked(LOGOUT[5:20], opcode=0, fin=False)
            + masked(LOGOUT[20:], opcode=0))
    p = ClientFrameParser()
    got = []
    for i in range(len(data)):
        got += p.feed(data[i:i + 1])
    assert got == [LOGOUT]


def test_large_and_binary_messages_skipped_without_buffering() -> None:
    big = b"1:2!\n" + b"x" * 70000
    p = ClientFrameParser()
    assert p.feed(masked(big) + masked(LOGOUT, opcode=0x2) + masked(b"\n{}")) == [b"\n{}"]
    assert p._msg is None


def test_protocol_errors() -> None:
    with pytest.raises(FrameProtocolError, match="not masked"):
        ClientFrameParser().feed(b"\x81\x02hi")
    with pytest.raises(FrameProtocolError, match="continuation"):
        ClientFrameParser().feed(masked(b"x", opcode=0))
    with pytest.raises(FrameProtocolError, match="control frame"):
        ClientFrameParser().feed(masked(b"x" * 126, opcode=0x9))


def test_is_logout() -> None:
    assert is_logout(LOGOUT)
    assert not is_logout(b'1:1!\n{"command":"logout"}')  # data channel, not control
    assert not is_logout(b'\n{"command":"close"}') and not is_logout(b"\nnot json")


def test_watcher_fires_once_and_survives_garbage() -> None:
    calls: list[int] = []
    w = LogoutWatcher(lambda: calls.append(1))
    w.feed(masked(b'\n{"command":"open","channel":"1"}') + masked(LOGOUT) + masked(LOGOUT))
    assert calls == [1] and w.fired
    bad = LogoutWatcher(lambda: calls.append(2))
    bad.feed(b"\x81\x02hi")  # unmasked: stop watching, never raise into the tunnel
    bad.feed(masked(LOGOUT))
    assert calls == [1] and bad.error is not None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(min_value=1, max_value=50))
def test_any_split_finds_the_logout(messages: list[bytes], chunk: int) -> None:
    stream = b"".join(masked(m) for m in messages) + masked(LOGOUT)
    calls: list[int] = []
    w = LogoutWatcher(lambda: calls.append(1))
    for i in range(0, len(stream), chunk):
        w.feed(stream[i:i + chunk])
    assert calls == [1]
