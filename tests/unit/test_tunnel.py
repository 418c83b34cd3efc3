"""WebSocket tunnel pieces (proxy.http.tunnel): accept check, frame tracking, close frames, registry."""

from __future__ import annotations

import struct

from twisted.internet.task import Clock

from proxy.http.tunnel import (FrameTracker, TunnelRegistry, WebSocketTunnel, close_frame, valid_ws_key,
                          ws_accept)
from tests.support_http import ws_frame


class End:
    """A fake transport end recording writes and closes."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.data += data

    def loseConnection(self) -> None:
        self.closed = True

    def abortConnection(self) -> None:
        self.aborted = True


def test_ws_accept_rfc6455_example() -> None:
    """The RFC 6455 §1.3 example key gives the documented accept value."""
    assert ws_accept(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert valid_ws_key(b"dGhlIHNhbXBsZSBub25jZQ==")
    assert not valid_ws_key(b"short") and not valid_ws_key(b"!!notbase64!!") and not valid_ws_key(b"")


def test_close_frame_unmasked_and_masked() -> None:
    """Server close frames are unmasked: 0x88, length, code, reason; masked for the upstream."""
    f = close_frame(1008, "session ended")
    assert f[0] == 0x88 and f[1] == 2 + len("session ended")
    assert struct.unpack("!H", f[2:4])[0] == 1008 and f[4:] == b"session ended"
    m = close_frame(1001, "x", mask=b"\x01\x02\x03\x04")
    assert m[1] & 0x80 and m[2:6] == b"\x01\x02\x03\x04"
    assert len(close_frame(1000, "r" * 500)) == 2 + 125  # control frames stay <= 125 bytes


def test_frame_tracker_follows_boundaries_across_splits() -> None:
    """Boundaries are found for small, 16-bit and 64-bit lengths, split at every byte."""
    stream = (ws_frame(1, b"hi", mask=False) + ws_frame(2, b"x" * 300, mask=False)
              + ws_frame(2, b"y" * 70000, mask=False) + ws_frame(1, b"masked", mask=True))
    ends = set()
    pos = 0
    for fr in (ws_frame(1, b"hi", mask=False), ws_frame(2, b"x" * 300, mask=False),
               ws_frame(2, b"y" * 70000, mask=False), ws_frame(1, b"masked", mask=True)):
        pos += len(fr)
        ends.add(pos)
    for step in (1, 3, 7, 1000, len(stream)):
        t = FrameTracker()
        fed = 0
        for i in range(0, len(stream), step):
            part = stream[i:i + step]
            t.feed(part)
            fed += len(part)
            assert t.at_boundary == (fed in ends), (step, fed)


def test_tunnel_relays_and_closes_at_frame_boundary() -> None:
    """close() waits for the current upstream frame to finish, then sends the close frame."""
    clock = Clock()
    client, upstream = End(), End()
    closed = []
    t = WebSocketTunnel(client, upstream, clock, on_closed=closed.append)
    hello = ws_frame(1, b"abc")
    t.from_client(hello)
    assert upstream.data == hello
    frame = ws_frame(2, b"z" * 1000, mask=False)
    t.from_upstream(frame[:100])
    t.close(1008, "session ended")
    assert not client.closed  # mid-frame: waits
    t.from_client(b"ignored")
    assert upstream.data == hello
    t.from_upstream(frame[100:] + ws_frame(1, b"next", mask=False))
    assert client.data.startswith(frame)
    assert client.data[len(frame):] == close_frame(1008, "session ended")
    assert client.closed and upstream.closed and closed == [t]
    assert upstream.data.endswith(close_frame(1008, "session ended", mask=b"\0\0\0\0"))


def test_tunnel_close_grace_cuts_a_stalled_frame() -> None:
    """If the frame never completes, the tunnel is cut after the grace period."""
    clock = Clock()
    client, upstream = End(), End()
    t = WebSocketTunnel(client, upstream, clock, close_grace=2.0)
    t.from_upstream(ws_frame(2, b"z" * 100, mask=False)[:10])
    t.close(1001, "going away")
    clock.advance(1.9)
    assert not client.aborted
    clock.advance(0.2)
    assert client.aborted and upstream.aborted and t.closed


def test_tunnel_idle_timeout() -> None:
    """[websocket] idle_timeout closes a silent tunnel with 1001; traffic postpones it."""
    clock = Clock()
    client, upstream = End(), End()
    t = WebSocketTunnel(client, upstream, clock, idle_timeout=10.0)
    clock.advance(6)
    t.from_client(b"x")
    clock.advance(6)
    assert not client.closed
    clock.advance(5)
    assert client.closed and client.data == close_frame(1001, "idle timeout")
    assert not clock.getDelayedCalls()


def test_registry_indexes_and_closes() -> None:
    """close_session / close_fingerprint / close_all close the right tunnels and count them."""
    clock = Clock()
    reg = TunnelRegistry()
    tunnels = []
    for sid, fp in (("s1", "f1"), ("s1", "f2"), ("s2", "f2"), (None, None)):
        t = WebSocketTunnel(End(), End(), clock, on_closed=reg.remove)
        reg.add(sid, fp, t)
        tunnels.append(t)
    assert reg.count() == 4
    assert reg.close_session("s1") == 2
    assert tunnels[0].closed and tunnels[1].closed and not tunnels[2].closed
    assert reg.count() == 2
    assert reg.close_session("s1") == 0
    assert reg.close_fingerprint("f2", 1008, "revoked") == 1
    assert tunnels[2].client.data == close_frame(1008, "revoked")  # type: ignore[attr-defined]
    assert reg.close_all() == 1 and reg.count() == 0
    assert tunnels[3].client.data == close_frame(1001, "going away")  # type: ignore[attr-defined]


def test_registry_remove_when_tunnel_ends_by_itself() -> None:
    """A tunnel that ends (peer closed) leaves the registry."""
    reg = TunnelRegistry()
    t = WebSocketTunnel(End(), End(), Clock(), on_closed=reg.remove)
    reg.add("s", "f", t)
    t.lost()
    assert reg.count() == 0 and reg.close_session("s") == 0 and reg.close_fingerprint("f") == 0


def test_no_close_frame_into_a_half_sent_client_frame() -> None:
    """If the client was mid-frame, the upstream gets no injected close frame (just the close)."""
    client, upstream = End(), End()
    t = WebSocketTunnel(client, upstream, Clock())
    half = ws_frame(1, b"x" * 50)[:20]
    t.from_client(half)
    t.close(1008, "session ended")
    assert client.data == close_frame(1008, "session ended")
    assert upstream.data == half and upstream.closed
