"""Key files: created 0600 when missing, never silently replaced when broken."""

import os
import stat

import pytest

from proxy.login.keys import KeyFileError, derive_key, load_fernet, load_secret


def test_secret_created_0600_and_stable(tmp_path):
    p = tmp_path / "secret"
    a = load_secret(p, create=True)
    assert len(a) == 32 and stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert load_secret(p) == a


def test_secret_missing_without_create(tmp_path):
    with pytest.raises(KeyFileError, match="does not exist"):
        load_secret(tmp_path / "nope")


@pytest.mark.parametrize("text,why", [("c2hvcnQ\n", "at least 32"), ("!!!!\n", "base64url|at least")])
def test_bad_secret_refused_not_replaced(tmp_path, text, why):
    p = tmp_path / "secret"
    p.write_text(text)
    with pytest.raises(KeyFileError, match=why):
        load_secret(p, create=True)
    assert p.read_text() == text


def test_derived_keys_differ_by_purpose():
    s = b"s" * 32
    assert derive_key(s, "receipt") != derive_key(s, "csrf") and len(derive_key(s, "receipt")) == 32


def test_fernet_ring_errors_name_the_line(tmp_path):
    p = tmp_path / "k"
    load_fernet(p, create=True)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    p.write_text(p.read_text() + "# comment\nnot-a-key\n")
    with pytest.raises(KeyFileError, match=":3: is not a Fernet key|line 3 is not a Fernet key"):
        load_fernet(p)
    p.write_text("# only a comment\n")
    with pytest.raises(KeyFileError, match="no key"):
        load_fernet(p)


def test_service_refuses_to_start_with_broken_secret(tmp_path):
    from tests.harness.login_rig import make_rig

    (tmp_path / "secret").write_text("short\n")
    with pytest.raises(KeyFileError, match="secret"):
        make_rig(tmp_path)
