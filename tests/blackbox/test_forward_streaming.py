"""Large bodies through the real gateway process: streamed both ways, memory stays flat.

256 MiB up (Content-Length and chunked) and 256 MiB down through `certgate run` with TLS on both
client legs; the gateway's peak RSS (VmHWM) may grow by at most 64 MiB over its idle size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.client import Client
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.pki import Pki
from tests.harness.upstream import RecordingUpstream
from tests.harness.wire import pattern, pattern_sha256

SIZE = 256 * 1024 * 1024
GROWTH_LIMIT_KIB = 64 * 1024


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing for pid {pid}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Pki, RecordingUpstream]]:
    tmp = tmp_path_factory.mktemp("fwdstream")
    pki = Pki(tmp / "pki")
    with RecordingUpstream() as up:
        cfg = write_config(tmp, pki, upstream=up.url, extra={"upstream": {"read_timeout": 60}})
        with Gateway(cfg) as gw:
            yield gw, pki, up


def _client(gw: Gateway, pki: Pki) -> Client:
    c = pki.client("alice")
    return Client(gw.port, ca_file=pki.ca_pem, cert_files=(str(c.cert_path), str(c.key_path)), timeout=120)


def test_large_bodies_stream_both_ways_with_flat_memory(stack: tuple[Gateway, Pki, RecordingUpstream]) -> None:
    gw, pki, up = stack
    assert gw.proc is not None
    pid = gw.proc.pid
    with _client(gw, pki) as c:  # warm up: one small exchange
        assert c.request("GET", "/warm").status == 200
    base = _kib(pid, "VmRSS")
    expected = pattern_sha256(SIZE)

    # Upload with Content-Length.
    with _client(gw, pki) as c:
        c.send(b"PUT /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % SIZE)
        for block in pattern(SIZE):
            c.send(block)
        rec = c.read_reply().json()
    assert rec["body_len"] == SIZE and rec["body_sha256"] == expected
    assert [v for k, v in rec["headers"] if k.lower() == "content-length"] == [str(SIZE)]

    # Upload chunked (re-encoded by certgate on its way up).
    with _client(gw, pki) as c:
        c.send(b"POST /upload-chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        for block in pattern(SIZE):
            c.send(b"%x\r\n" % len(block) + block + b"\r\n")
        c.send(b"0\r\n\r\n")
        rec = c.read_reply().json()
    assert rec["body_len"] == SIZE and rec["body_sha256"] == expected

    # Download (Content-Length) and check every byte.
    with _client(gw, pki) as c:
        h = hashlib.sha256()
        n = [0]

        def sink(b: bytes) -> None:
            h.update(b)
            n[0] += len(b)

        c.send(b"GET /bytes/%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % SIZE)
        r = c.read_reply(sink=sink)
    assert r.status == 200 and n[0] == SIZE and h.hexdigest() == expected

    peak = _kib(pid, "VmHWM")
    assert peak - base < GROWTH_LIMIT_KIB, f"gateway peak RSS grew by {(peak - base) // 1024} MiB"


def test_slow_reader_pauses_upstream(stack: tuple[Gateway, Pki, RecordingUpstream]) -> None:
    """A client that reads nothing for a while: the gateway does not buffer the whole download."""
    import threading

    gw, pki, up = stack
    assert gw.proc is not None
    pid = gw.proc.pid
    before = _kib(pid, "VmRSS")
    with _client(gw, pki) as c:
        c.send(b"GET /bytes/%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % (128 * 1024 * 1024))
        threading.Event().wait(2.0)  # do not read: socket buffers fill, certgate must pause upstream
        during = _kib(pid, "VmRSS")
        got = [0]
        r = c.read_reply(sink=lambda b: got.__setitem__(0, got[0] + len(b)))
    assert r.status == 200 and got[0] == 128 * 1024 * 1024
    assert during - before < 32 * 1024, f"RSS grew by {(during - before) // 1024} MiB while the client stalled"
