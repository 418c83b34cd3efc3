"""One CLI grammar: --config before or after the command word, for every command; no tracebacks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.blackbox import CERTGATE, Pki, write_config


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CERTGATE, *args], capture_output=True, text=True, timeout=60,
                          input=stdin if stdin is not None else None,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    pki = Pki(tmp_path / "pki")
    return write_config(tmp_path, pki, upstream="http://127.0.0.1:9", extra={
        "sessions": {"store": "sqlite:sessions.db"},
        "login": {"password": "file", "password_file": "passwords", "totp_secrets": "totp.enc",
                  "totp_key": "totp.key"}})


@pytest.mark.parametrize("verb", [["check-config"], ["trust", "list"], ["sessions", "list"], ["totp", "list"],
                                  ["passwd", "alice", "--password-stdin"], ["run", "--help"]])
def test_config_is_accepted_before_and_after_the_command(cfg: Path, verb: list[str]) -> None:
    placements = [["--config", str(cfg), *verb], [verb[0], "--config", str(cfg), *verb[1:]],
                  [*verb, "--config", str(cfg)], ["-c", str(cfg), *verb], [*verb, f"--config={cfg}"]]
    results = [_run(*argv, stdin="correct horse battery\n") for argv in placements]
    first = results[0]
    for r in results:
        assert r.returncode == 0, (r.args, r.stderr)  # the config was found and read, wherever it stood
        assert r.stdout == first.stdout, (r.args, r.stderr)
        assert "Traceback" not in r.stderr


def test_version() -> None:
    r = _run("--version")
    assert r.returncode == 0 and r.stdout.startswith("certgate ") and r.stdout.strip() != "certgate"


def test_passwd_without_a_terminal_says_how_and_password_stdin_works(cfg: Path) -> None:
    r = _run("passwd", "alice", "--config", str(cfg))
    assert r.returncode == 2 and "--password-stdin" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _run("passwd", "alice", "--config", str(cfg), "--password-stdin", stdin="correct horse battery\n")
    assert r.returncode == 0, r.stderr
    assert "alice:" in (cfg.parent / "passwords").read_text()


@pytest.mark.parametrize("argv", [
    ["trust", "list", "--config", "/nonexistent/certgate.conf"],
    ["sessions", "list", "--config", "/nonexistent/certgate.conf"],
    ["totp", "list", "--config", "/nonexistent/certgate.conf"],
    ["passwd", "alice", "--password-stdin", "--config", "/nonexistent/certgate.conf"],
    ["check-config", "/nonexistent/certgate.conf"],
    ["--config"],
    ["--config", "a.conf", "trust", "list", "--config", "b.conf"],
    ["no-such-command"],
    ["trust", "remove"],
])
def test_operator_mistakes_never_print_a_traceback(argv: list[str]) -> None:
    r = _run(*argv, stdin="pw\n")
    assert r.returncode == 2 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("certgate"), r.stderr
