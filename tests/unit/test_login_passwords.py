"""Password file: scrypt hashes, constant-time verify, uniform unknown accounts, file errors."""

import os
import stat

import pytest

from proxy.login import passwords as pw
from tests.harness.login_rig import FAST_COST


def test_hash_verify_and_wrong(tmp_path):
    path = tmp_path / "pw"
    pw.set_password(path, "alice", "correct horse", **FAST_COST)
    f = pw.PasswordFile(path)
    assert f.verify("alice", "correct horse")
    assert not f.verify("alice", "correct horsE")
    assert not f.verify("alice", "")
    line = path.read_text().strip()
    assert line.startswith("alice:scrypt$1024$8$1$") and "correct" not in line


def test_file_mode_0600_and_atomic_update(tmp_path):
    path = tmp_path / "pw"
    path.write_text("# operators' comment\n")
    pw.set_password(path, "alice", "one", **FAST_COST)
    pw.set_password(path, "bob", "two", **FAST_COST)
    pw.set_password(path, "alice", "three", **FAST_COST)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert text.startswith("# operators' comment\n") and text.count("alice:") == 1
    f = pw.PasswordFile(path)
    assert f.verify("alice", "three") and not f.verify("alice", "one") and f.verify("bob", "two")
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_unknown_account_is_false_after_same_work(tmp_path, monkeypatch):
    path = tmp_path / "pw"
    pw.set_password(path, "alice", "secret", **FAST_COST)
    calls = []
    real = pw._scrypt
    monkeypatch.setattr(pw, "_scrypt", lambda *a: calls.append(a[2]) or real(*a))
    f = pw.PasswordFile(path)
    assert not f.verify("mallory", "secret")
    assert calls == [FAST_COST["n"]]  # a dummy hash of the entries' cost was computed


def test_nfc_normalisation(tmp_path):
    path = tmp_path / "pw"
    pw.set_password(path, "alice", "caf\u00e9", **FAST_COST)
    assert pw.PasswordFile(path).verify("alice", "cafe\u0301")


def test_reload_on_change(tmp_path):
    path = tmp_path / "pw"
    pw.set_password(path, "alice", "a", **FAST_COST)
    f = pw.PasswordFile(path)
    assert f.verify("alice", "a")
    pw.set_password(path, "alice", "b", **FAST_COST)
    assert f.verify("alice", "b") and not f.verify("alice", "a")


def test_delete(tmp_path):
    path = tmp_path / "pw"
    pw.set_password(path, "alice", "a", **FAST_COST)
    assert pw.delete_password(path, "alice")
    assert not pw.delete_password(path, "alice")
    assert not pw.PasswordFile(path).verify("alice", "a")


def test_file_errors_have_line_numbers(tmp_path):
    path = tmp_path / "pw"
    good = pw.hash_password("x", **FAST_COST).encode()
    path.write_text(f"# c\nalice:{good}\nbob:md5$abc\nalice:{good}\nnocolon\ncarol:scrypt$1000$8$1$AAAA$BBBB\n")
    with pytest.raises(pw.PasswordFileError) as ei:
        pw.PasswordFile(path).verify("alice", "x")
    probs = ei.value.problems
    assert any(p.endswith(":3: expected scrypt$N$r$p$SALT$HASH") for p in probs)
    assert any(":4: account 'alice' appears twice" in p for p in probs)
    assert any(":5: expected ACCOUNT:" in p for p in probs)
    assert any(":6: N=1000 is not a power of two" in p for p in probs)
    # a malformed file is never rewritten
    with pytest.raises(pw.PasswordFileError):
        pw.set_password(path, "dave", "y", **FAST_COST)


def test_missing_file_fails_closed(tmp_path):
    with pytest.raises(pw.PasswordFileError, match="does not exist"):
        pw.PasswordFile(tmp_path / "nope").verify("alice", "x")


@pytest.mark.parametrize("password,why", [("", "empty"), ("a" * 1025, "longer"), ("a\x00b", "NUL")])
def test_bad_passwords_refused(tmp_path, password, why):
    with pytest.raises(pw.PasswordError, match=why):
        pw.set_password(tmp_path / "pw", "alice", password, **FAST_COST)


@pytest.mark.parametrize("account", ["", " alice", "al\nice", "al\x00ice"])
def test_bad_account_names_refused(tmp_path, account):
    with pytest.raises(pw.PasswordError):
        pw.set_password(tmp_path / "pw", account, "x", **FAST_COST)
