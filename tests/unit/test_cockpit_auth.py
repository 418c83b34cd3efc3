"""certgate cockpit-auth: framing, the authorize exchange, assertions (no cockpit-ws here)."""

from __future__ import annotations

import base64
import json

import pytest

from proxy.frontdoors.assertion import (AssertionInvalid, assertion_key, mint_assertion,
                                        verify_assertion)
from proxy.frontdoors.cockpit_auth import (Accepted, AuthCommand, FrameError, FrameReader, Refused,
                                           bridge_argv, encode_control, encode_frame, local_user_check,
                                           parse_control, read_disallowed)
from proxy.stores.memory import MemoryEngine as MemoryStore  # the blocking face: this command owns its process

SECRET = b"s" * 32
KEY = assertion_key(SECRET)
NOW = 1_800_000_000.0
FP = "ab" * 32


def reader_of(data: bytes, chunk: int = 3) -> FrameReader:
    buf = bytearray(data)

    def read(n: int) -> bytes:
        out = bytes(buf[:min(n, chunk)])
        del buf[:len(out)]
        return out

    return FrameReader(read)


def frames_of(data: bytes) -> list[dict]:
    r = reader_of(data, chunk=4096)
    out = []
    while True:
        try:
            out.append(parse_control(*r.read_frame()))
        except EOFError:
            return out


# ------------------------------------------------------------------ framing

def test_frame_encoding_matches_protocol_doc() -> None:
    assert encode_frame("a5", b"abc") == b"6\na5\nabc"  # doc/protocol.md's example
    frame = encode_control({"command": "init", "problem": "access-denied"})
    payload = b'{"command":"init","problem":"access-denied"}'
    assert frame == str(len(payload) + 1).encode() + b"\n\n" + payload


def test_reader_reassembles_split_frames_and_keeps_the_rest() -> None:
    data = encode_control({"command": "authorize", "cookie": "c", "response": "Bearer x"}) + encode_frame("e1", b"hi")
    r = reader_of(data, chunk=1)
    ch, payload = r.read_frame()
    assert ch == "" and json.loads(payload)["response"] == "Bearer x"
    assert r.read_frame() == ("e1", b"hi")
    with pytest.raises(EOFError):
        r.read_frame()


@pytest.mark.parametrize("data, why", [
    (b"0\n", "not canonical"),
    (b"07\n\n{}abcd", "not canonical"),
    (b"-5\n\n{}", "not a decimal"),
    (b"+5\n\n{}", "not a decimal"),
    (b"\n\n{}", "not a decimal"),
    (b"99999999\n", "more than"),
    (b"70000\n", "exceeds the limit"),
    (b"3\nabc", "no channel terminator"),
])
def test_reader_refuses_bad_lengths(data: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        reader_of(data).read_frame()


def test_reader_eof_in_the_middle_of_a_frame() -> None:
    with pytest.raises(EOFError):
        reader_of(b"20\n\n{\"command\"").read_frame()


def test_parse_control_refuses_data_and_non_objects() -> None:
    with pytest.raises(FrameError, match="data on channel"):
        parse_control("e1", b"{}")
    with pytest.raises(FrameError, match="JSON object"):
        parse_control("", b"[1]")
    with pytest.raises(FrameError, match="not UTF-8 JSON"):
        parse_control("", b"{nope")


# ------------------------------------------------------------------ assertions

def test_assertion_roundtrip_and_claims() -> None:
    tok = mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW, lifetime=30)
    a = verify_assertion(KEY, tok, now=NOW + 29.9)
    assert (a.account, a.fingerprint, a.expires_at) == ("alice", FP, NOW + 30)
    assert len(a.jti) >= 16
    other = mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW, lifetime=30)
    assert verify_assertion(KEY, other, now=NOW).jti != a.jti


@pytest.mark.parametrize("mutate, code", [
    (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "bad-signature"),
    (lambda t: "cga2" + t[4:], "malformed"),
    (lambda t: t + ".x", "malformed"),
    (lambda t: t.replace(".", ".!", 1), "bad-signature"),  # signature checked before decoding
    (lambda t: t[:-3] + "!!!", "malformed"),
])
def test_assertion_tampering_refused(mutate, code) -> None:
    tok = mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW, lifetime=30)
    with pytest.raises(AssertionInvalid) as ei:
        verify_assertion(KEY, mutate(tok), now=NOW)
    assert ei.value.code == code


def test_assertion_payload_swap_breaks_signature() -> None:
    tok = mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW, lifetime=30)
    evil = base64.urlsafe_b64encode(json.dumps({"aud": "cockpit", "sub": "root", "fp": FP, "iat": NOW,
                                                "exp": NOW + 30, "jti": "x" * 20}).encode()).rstrip(b"=").decode()
    p = tok.split(".")
    with pytest.raises(AssertionInvalid) as ei:
        verify_assertion(KEY, f"{p[0]}.{evil}.{p[2]}", now=NOW)
    assert ei.value.code == "bad-signature"


def test_assertion_time_window_and_wrong_key() -> None:
    tok = mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW, lifetime=30)
    for now, code in ((NOW + 30, "expired"), (NOW - 10, "not-yet-valid")):
        with pytest.raises(AssertionInvalid) as ei:
            verify_assertion(KEY, tok, now=now)
        assert ei.value.code == code
    with pytest.raises(AssertionInvalid) as ei:
        verify_assertion(assertion_key(b"t" * 32), tok, now=NOW)
    assert ei.value.code == "bad-signature"
    with pytest.raises(ValueError):
        mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW, lifetime=901)


def test_assertion_key_differs_from_receipt_key() -> None:
    from proxy.login.keys import derive_key

    assert KEY != derive_key(SECRET, "receipt") and KEY != SECRET


# ------------------------------------------------------------------ the exchange

class Harness:
    def __init__(self, *, users=("alice",), unavailable=None, store=None, now=NOW) -> None:
        self.store = store if store is not None else MemoryStore()
        self.out = bytearray()
        self.logs: list[str] = []
        self.cmd = AuthCommand(key=KEY, consume=self.store.consume_once,
                               user_allowed=lambda u: None if u in users else f"no user {u}",
                               now=lambda: now, log=self.logs.append, cookie="c1", unavailable=unavailable)

    def run(self, *replies: bytes):
        result = self.cmd.run(reader_of(b"".join(replies)), self.out.extend)
        return result, frames_of(bytes(self.out))


def reply(response: str | None, cookie: str = "c1", **extra) -> bytes:
    msg = {"command": "authorize", "cookie": cookie, **extra}
    if response is not None:
        msg["response"] = response
    return encode_control(msg)


def test_good_assertion_287_style() -> None:
    h = Harness()
    tok = mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW, lifetime=30)
    result, frames = h.run(reply("Bearer " + tok))
    assert result == Accepted("alice", FP, "alice")
    assert frames[0] == {"command": "authorize", "cookie": "c1", "challenge": "*"}
    assert frames[1]["challenge"] == "x-login-data"
    assert frames[1]["login-data"] == {"certgate-account": "alice", "certgate-fingerprint": FP}
    assert not any(f["command"] == "init" for f in frames)  # the bridge sends init
    assert tok not in "".join(h.logs)


def test_remote_peer_of_newer_cockpit_tolerated() -> None:
    h = Harness()
    tok = mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW, lifetime=30)
    result, _ = h.run(reply("Bearer " + tok, **{"remote-peer": "192.0.2.7"}))
    assert isinstance(result, Accepted)
    assert "192.0.2.7" in h.logs[-1]


def test_reused_assertion_refused_through_the_store() -> None:
    store = MemoryStore()
    tok = mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW, lifetime=30)
    assert isinstance(Harness(store=store).run(reply("Bearer " + tok))[0], Accepted)
    result, frames = Harness(store=store).run(reply("Bearer " + tok))
    assert result.reason == "assertion-reused"
    assert frames[-1] == {"command": "init", "problem": "authentication-failed",
                          "message": "certgate refused the login"}


@pytest.mark.parametrize("make, reason, problem", [
    (lambda: "Basic YWxpY2U6cHc=", "wrong-scheme", "authentication-failed"),
    (lambda: "Negotiate abc", "wrong-scheme", "authentication-failed"),
    (lambda: mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW - 60, lifetime=30),
     "assertion-expired", "authentication-failed"),
    (lambda: "garbage", "assertion-malformed", "authentication-failed"),
    (lambda: mint_assertion(assertion_key(b"x" * 32), account="alice", fingerprint=FP, now=NOW, lifetime=30),
     "assertion-bad-signature", "authentication-failed"),
    (lambda: mint_assertion(KEY, account="mallory", fingerprint=FP, now=NOW, lifetime=30),
     "user-refused", "access-denied"),
])
def test_refusals_send_init_problem(make, reason, problem) -> None:
    cred = make()
    if not cred.startswith(("Basic", "Negotiate")):
        cred = "Bearer " + cred
    result, frames = Harness().run(reply(cred))
    assert isinstance(result, Refused) and result.reason == reason
    assert frames[-1]["command"] == "init" and frames[-1]["problem"] == problem
    assert len(frames) == 2  # challenge, then the init problem only


def test_no_credentials_and_protocol_errors() -> None:
    assert Harness().run(reply(None))[0].reason == "no-credentials"
    r, frames = Harness().run(reply("Bearer x", cookie="other"))
    assert (r.problem, r.reason) == ("internal-error", "protocol-error")
    r, frames = Harness().run(encode_frame("e1", b"data"))
    assert r.reason == "protocol-error" and frames[-1]["problem"] == "internal-error"
    r, frames = Harness().run(b"00\n\n{}")
    assert r.reason == "protocol-error" and "canonical" in r.message


def test_unavailable_setup_fails_closed() -> None:
    tok = mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW, lifetime=30)
    r, frames = Harness(unavailable="[login] secret_key: missing").run(reply("Bearer " + tok))
    assert r.problem == "authentication-unavailable" and frames[-1]["problem"] == "authentication-unavailable"


def test_store_error_fails_closed() -> None:
    class Broken(MemoryStore):
        def consume_once(self, *a):  # type: ignore[override]
            raise OSError("disk full")

    tok = mint_assertion(KEY, account="alice", fingerprint=FP, now=NOW, lifetime=30)
    r, _ = Harness(store=Broken()).run(reply("Bearer " + tok))
    assert (r.problem, r.reason) == ("authentication-unavailable", "store-error")


# ------------------------------------------------------------------ users and bridge

def test_local_user_check(tmp_path) -> None:
    f = tmp_path / "disallowed"
    f.write_text("# comment\nroot\n\n")
    check = local_user_check(read_disallowed(str(f)))
    assert "disallowed" in check("root")
    assert check("nobody") is None
    assert "no local user" in check("no-such-user-certgate")
    assert read_disallowed(str(tmp_path / "missing")) == frozenset()


def test_bridge_argv() -> None:
    assert bridge_argv("alice", "cockpit-bridge", euid=1000, current_user="alice") == ["cockpit-bridge"]
    argv = bridge_argv("alice", "cockpit-bridge", euid=0, current_user="root")
    assert argv[0].endswith("runuser") and argv[1:] == ["-u", "alice", "--", "cockpit-bridge"]
    with pytest.raises(PermissionError, match="not root"):
        bridge_argv("alice", "cockpit-bridge", euid=1000, current_user="bob")
