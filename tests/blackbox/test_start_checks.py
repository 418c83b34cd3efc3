"""Issue 12: check-config is run's own validation; both refuse a bad config in one line per problem, status 2.

Each case runs the real ``certgate check-config`` and ``certgate run`` on the same file: both
must name the same problem (section, key, reason) and exit 2 without a traceback.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from tests.blackbox import CERTGATE, Gateway, Pki, Recorder, request, write_config


def _both(cfg: Path) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    check = subprocess.run([CERTGATE, "check-config", str(cfg)], capture_output=True, text=True, timeout=60)
    run = subprocess.run([CERTGATE, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    return check, run


def _assert_refused(cfg: Path, expected: str) -> None:
    check, run = _both(cfg)
    assert check.returncode == 2, check.stdout + check.stderr
    assert len(check.stderr.splitlines()) == 1, check.stderr
    assert check.stderr.startswith(f"certgate check-config: {cfg}: {expected}"), check.stderr
    assert run.returncode == 2, run.stdout + run.stderr
    out = run.stdout + run.stderr
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines == [f"certgate: {cfg}: {expected}"] or (len(lines) == 1 and expected in lines[0]), out


def _admin_no_token(tmp: Path, pki: Pki) -> tuple[Path, str]:
    port = _free()
    cfg = write_config(tmp, pki, upstream="http://127.0.0.1:9", extra={"admin": {"address": "0.0.0.0", "port": port}})
    return cfg, ("[admin] address: 0.0.0.0 is not a loopback address; set [admin] token_file so the admin API "
                 "needs a bearer token")


def _audit_unwritable(tmp: Path, pki: Pki) -> tuple[Path, str]:
    target = tmp / "no-such-folder" / "audit.log"
    cfg = write_config(tmp, pki, upstream="http://127.0.0.1:9", extra={"audit": {"file": str(target)}})
    return cfg, f"[audit] file: {target}: the folder {target.parent} does not exist"


def _audit_is_folder(tmp: Path, pki: Pki) -> tuple[Path, str]:
    cfg = write_config(tmp, pki, upstream="http://127.0.0.1:9", extra={"audit": {"file": str(tmp)}})
    return cfg, f"[audit] file: {tmp} is a directory"


def _log_unwritable(tmp: Path, pki: Pki) -> tuple[Path, str]:
    target = tmp / "no-such-folder" / "certgate.log"
    cfg = write_config(tmp, pki, upstream="http://127.0.0.1:9", extra={"log": {"file": str(target)}})
    return cfg, f"[log] file: {target}: the folder {target.parent} does not exist"


def _key_unreadable(tmp: Path, pki: Pki) -> tuple[Path, str]:
    folder = tmp / "a-folder-not-a-key"
    folder.mkdir()
    cfg = write_config(tmp, pki, upstream="http://127.0.0.1:9", extra={"listen": {"key": str(folder)}})
    return cfg, f"[listen] key: {folder} does not exist or is not a file"


def _key_not_a_key(tmp: Path, pki: Pki) -> tuple[Path, str]:
    garbage = tmp / "garbage-key.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    cfg = write_config(tmp, pki, upstream="http://127.0.0.1:9", extra={"listen": {"key": str(garbage)}})
    return cfg, f"[listen] key: {garbage}: not a PEM private key"


def _key_of_another_certificate(tmp: Path, pki: Pki) -> tuple[Path, str]:
    other = pki.client("bob")
    cfg = write_config(tmp, pki, upstream="http://127.0.0.1:9", extra={"listen": {"key": str(other.key_path)}})
    return cfg, f"[listen] key: {other.key_path}: this key does not belong to the first certificate"


def _key_missing(tmp: Path, pki: Pki) -> tuple[Path, str]:
    missing = tmp / "missing-key.pem"
    cfg = write_config(tmp, pki, upstream="http://127.0.0.1:9", extra={"listen": {"key": str(missing)}})
    return cfg, f"[listen] key: {missing} does not exist or is not a file"


def _state_unwritable(tmp: Path, pki: Pki) -> tuple[Path, str]:
    blocker = tmp / "a-file"
    blocker.write_text("not a folder\n")
    db = blocker / "sessions.db"
    cfg = write_config(tmp, pki, upstream="http://127.0.0.1:9", extra={"sessions": {"store": f"sqlite:{db}"}})
    return cfg, f"[sessions] store: {db}: the folder {blocker} does not exist"


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CASES: dict[str, Callable[[Path, Pki], tuple[Path, str]]] = {
    "admin-non-loopback-without-token": _admin_no_token,
    "audit-folder-missing": _audit_unwritable,
    "audit-is-a-folder": _audit_is_folder,
    "log-folder-missing": _log_unwritable,
    "key-unreadable": _key_unreadable,
    "key-not-a-key": _key_not_a_key,
    "key-of-another-certificate": _key_of_another_certificate,
    "key-missing": _key_missing,
    "session-state-unwritable": _state_unwritable,
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_config_and_run_refuse_alike(tmp_path: Path, pki: Pki, case: str) -> None:
    cfg, expected = CASES[case](tmp_path, pki)
    _assert_refused(cfg, expected)


def test_port_in_use(tmp_path: Path, pki: Pki) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        cfg = write_config(tmp_path, pki, upstream="http://127.0.0.1:9", port=port)
        _assert_refused(cfg, f"[listen] port: 127.0.0.1:{port} is in use")


def test_unparsable_config_is_refused_in_one_line_per_problem(tmp_path: Path, pki: Pki) -> None:
    cfg = write_config(tmp_path, pki, upstream="http://127.0.0.1:9", extra={"listen": {"client_auth": "maybe"}})
    check, run = _both(cfg)
    assert check.returncode == 2 and "[listen] client_auth" in check.stderr
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert [line for line in run.stderr.splitlines() if line] == \
        [line.replace("certgate check-config: ", "certgate: ", 1) for line in check.stderr.splitlines()]


def test_admin_with_token_on_any_address_starts(tmp_path: Path, pki: Pki) -> None:
    """The admin check refuses only what it should: with a token a non-loopback address starts."""
    token = tmp_path / "admin.token"
    token.write_text("t" * 32 + "\n")
    upstream = Recorder()
    admin_port = _free()
    cfg = write_config(tmp_path, pki, upstream=upstream.url,
                       extra={"admin": {"address": "0.0.0.0", "port": admin_port, "token_file": str(token)}})
    try:
        check = subprocess.run([CERTGATE, "check-config", str(cfg)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        with Gateway(cfg) as gw:
            status, _, _ = request(gw.port, cert=pki.client("alice"), ca=pki.ca_pem)
            assert status == 200
    finally:
        upstream.close()


def test_check_config_running_skips_only_the_port_check(tmp_path: Path, pki: Pki) -> None:
    """Validating the file of a running gateway: --running does not report its own port."""
    upstream = Recorder()
    cfg = write_config(tmp_path, pki, upstream=upstream.url)
    try:
        with Gateway(cfg) as gw:
            busy = subprocess.run([CERTGATE, "check-config", str(cfg)], capture_output=True, text=True, timeout=60)
            assert busy.returncode == 2 and f"[listen] port: 127.0.0.1:{gw.port} is in use" in busy.stderr
            ok = subprocess.run([CERTGATE, "check-config", "--running", str(cfg)], capture_output=True, text=True,
                                timeout=60)
            assert ok.returncode == 0, ok.stderr
    finally:
        upstream.close()


def test_unusable_upstream_ca_bundle(tmp_path: Path, pki: Pki) -> None:
    bundle = tmp_path / "upstream-ca.pem"
    bundle.write_text("not a certificate\n")
    cfg = write_config(tmp_path, pki, upstream="https://127.0.0.1:9", extra={"upstream": {"tls_ca": str(bundle)}})
    check, run = _both(cfg)
    assert check.returncode == 2 and "[upstream] tls_ca: unusable: " in check.stderr, check.stderr
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "[upstream] tls_ca: unusable: " in run.stderr


def test_workers_with_an_admin_listener_all_start(tmp_path: Path, pki: Pki) -> None:
    """A worker process makes the same start checks but does not claim the primary's admin port."""
    from tests.blackbox import wait_for
    from tests.blackbox.test_service import _listeners

    upstream = Recorder()
    cfg = write_config(tmp_path, pki, upstream=upstream.url,
                       extra={"listen": {"workers": 2}, "sessions": {"store": f"sqlite:{tmp_path / 's.db'}"},
                              "admin": {"port": _free()}})
    try:
        with Gateway(cfg) as gw:
            wait_for(lambda: len(_listeners(gw.port)) == 2, 20, what="two listening workers")
            assert "Traceback" not in gw.log() and "cannot be bound" not in gw.log()
    finally:
        upstream.close()
