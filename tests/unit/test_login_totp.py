"""TOTP: strict syntax before pyotp, window, encryption at rest, fail closed."""

import os
import stat

import pyotp
import pytest

from proxy.login import totp as t
from proxy.login.keys import load_fernet

T0 = 1_800_000_000.0  # a multiple of 30: step boundary
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def code_at(ts, secret=SECRET):
    return pyotp.TOTP(secret).at(ts)


def test_valid_code_gives_its_step():
    assert t.check_code(SECRET, code_at(T0), T0, 1) == int(T0 // 30)
    assert t.check_code(SECRET, code_at(T0 - 30), T0, 1) == int(T0 // 30) - 1
    assert t.check_code(SECRET, code_at(T0 + 30), T0, 1) == int(T0 // 30) + 1


def test_window_edges():
    assert t.check_code(SECRET, code_at(T0 + 60), T0, 1) is None  # step +2
    assert t.check_code(SECRET, code_at(T0 - 60), T0, 1) is None  # step -2
    assert t.check_code(SECRET, code_at(T0 + 60), T0, 2) == int(T0 // 30) + 2
    assert t.check_code(SECRET, code_at(T0 + 30), T0, 0) is None


def test_full_width_digits_rejected_before_pyotp():
    code = code_at(T0)
    full = "".join(chr(ord(c) - ord("0") + 0xFF10) for c in code)
    assert pyotp.TOTP(SECRET).verify(full, for_time=T0)  # pyotp alone would accept it (NFKC)
    assert t.check_code(SECRET, full, T0, 1) is None


@pytest.mark.parametrize("mangle", [lambda c: " " + c, lambda c: c + " ", lambda c: c + "\n", lambda c: c[:5],
                                    lambda c: c + "0", lambda c: "\u0661" * 6, lambda c: c[:3] + " " + c[3:]])
def test_only_six_ascii_digits(mangle):
    assert t.check_code(SECRET, mangle(code_at(T0)), T0, 1) is None


def test_non_string_rejected():
    assert not t.valid_syntax(123456)
    assert t.check_code(SECRET, None, T0, 1) is None


def test_secrets_encrypted_at_rest(tmp_path):
    s = t.TotpSecrets(tmp_path / "totp", tmp_path / "key")
    s.store("alice", SECRET, T0)
    assert stat.S_IMODE(os.stat(tmp_path / "key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "totp").st_mode) == 0o600
    assert SECRET not in (tmp_path / "totp").read_text()
    assert s.enrolled("alice") and not s.enrolled("bob")
    assert s.secret("alice") == SECRET
    assert [a for a, _ in s.list()] == ["alice"]


def test_wrong_key_fails_closed(tmp_path):
    s = t.TotpSecrets(tmp_path / "totp", tmp_path / "key")
    s.store("alice", SECRET, T0)
    (tmp_path / "key").unlink()
    load_fernet(tmp_path / "key", create=True)  # a different key
    assert s.enrolled("alice")  # still enrolled: the factor stays required
    with pytest.raises(t.TotpError, match="cannot be decrypted"):
        s.secret("alice")
    assert "cannot be decrypted" in s.list()[0][1]


def test_swapped_lines_are_refused(tmp_path):
    s = t.TotpSecrets(tmp_path / "totp", tmp_path / "key")
    s.store("alice", SECRET, T0)
    token = (tmp_path / "totp").read_text().split(":", 1)[1]
    (tmp_path / "totp").write_text("bob:" + token)
    with pytest.raises(t.TotpError, match="does not belong to 'bob'"):
        s.secret("bob")


def test_missing_key_file_fails(tmp_path):
    s = t.TotpSecrets(tmp_path / "totp", tmp_path / "key")
    s.store("alice", SECRET, T0)
    (tmp_path / "key").unlink()
    with pytest.raises(t.TotpError, match="does not exist"):
        s.secret("alice")


def test_remove(tmp_path):
    s = t.TotpSecrets(tmp_path / "totp", tmp_path / "key")
    s.store("alice", SECRET, T0)
    s.store("bob", SECRET, T0)
    assert s.remove("alice") and not s.remove("alice")
    assert s.accounts() == ["bob"]


def test_uri_is_otpauth_and_local():
    uri = t.provisioning_uri(SECRET, "alice")
    assert uri.startswith("otpauth://totp/certgate:alice?secret=" + SECRET)
    assert "http" not in uri
