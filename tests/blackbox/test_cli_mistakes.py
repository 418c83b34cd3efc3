"""Every operator mistake of every ``certgate`` command: one line on stderr, no traceback, exit 2.

Table-driven: each case prepares files in a fresh folder, runs the real ``certgate`` executable
and checks the exit status, that standard error is exactly one line starting with the command's
name, that it names what is wrong (and where), and that no traceback leaked.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.blackbox import CERTGATE, Pki, write_config
from trust import issue as I


@dataclass
class Env:
    tmp: Path
    pki: Pki
    cfg: Path  # a valid config: sqlite sessions, password file, TOTP, WebAuthn credentials
    busy: socket.socket | None = None  # a listening socket a case holds for the run

    def file(self, name: str, data: bytes | str) -> str:
        p = self.tmp / name
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(p)

    def config(self, name: str, text: str) -> str:
        return self.file(name, text)

    def with_(self, name: str, **sections: dict[str, object]) -> str:
        """A copy of the valid config with ``sections`` overriding keys (in its own folder)."""
        folder = self.tmp / name
        folder.mkdir()
        return str(write_config(folder, self.pki, upstream="http://127.0.0.1:9", extra={**BASE, **sections}))


BASE: dict[str, dict[str, object]] = {
    "sessions": {"store": "sqlite:sessions.db"},
    "login": {"password": "file", "password_file": "passwords", "totp_secrets": "totp.enc", "totp_key": "totp.key"},
    "webauthn": {"credentials": "webauthn.json"},
}

#: case -> (argv, stdin) made from the Env; and what the one line must contain
Case = Callable[[Env], "tuple[list[str], str]"]
CASES: dict[str, tuple[Case, list[str]]] = {}


def case(name: str, *expected: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = (fn, list(expected))
        return fn
    return register


# --------------------------------------------------------------------------- the dispatcher

case("no-command", "certgate: no command given")(lambda e: ([], ""))
case("unknown-command", "certgate: unknown command 'frobnicate'")(lambda e: (["frobnicate"], ""))
case("config-without-file", "certgate: --config needs a file name")(lambda e: (["trust", "list", "--config"], ""))
case("config-twice", "--config given twice with different files")(
    lambda e: (["--config", "a.conf", "trust", "list", "--config", "b.conf"], ""))

# --------------------------------------------------------------------------- check-config and run

case("check-config-missing-file", "certgate check-config: /nonexistent/certgate.conf:", "cannot read")(
    lambda e: (["check-config", "/nonexistent/certgate.conf"], ""))
case("check-config-bad-value", "[listen] client_auth: 'maybe' is not one of")(
    lambda e: (["check-config", e.with_("c", listen={"client_auth": "maybe"})], ""))
case("check-config-two-files", "give the config file once")(
    lambda e: (["check-config", str(e.cfg), "--config", "other.conf"], ""))
case("run-without-config", "certgate run: the following arguments are required: --config")(lambda e: (["run"], ""))
case("run-bad-value", "[listen] client_auth: 'maybe' is not one of")(
    lambda e: (["run", "--config", e.with_("r", listen={"client_auth": "maybe"})], ""))
case("run-pidfile-folder-missing", "certgate run: /nonexistent/certgate.pid: the folder of the --pidfile")(
    lambda e: (["run", "--config", str(e.cfg), "--pidfile", "/nonexistent/certgate.pid"], ""))
case("run-unknown-option", "certgate run: unrecognized arguments: --frobnicate")(
    lambda e: (["run", "--config", str(e.cfg), "--frobnicate"], ""))

# --------------------------------------------------------------------------- trust


def _store(e: Env) -> list[str]:
    return ["--store", str(e.pki.store)]


case("trust-no-store", "certgate trust list: no trust store given")(lambda e: (["trust", "list"], ""))
case("trust-unknown-verb", "certgate trust: argument VERB: invalid choice: 'frob'")(
    lambda e: (["trust", "frob", *_store(e)], ""))
case("trust-config-missing", "certgate trust list: /nonexistent.conf: cannot read config")(
    lambda e: (["trust", "list", "--config", "/nonexistent.conf"], ""))
case("trust-config-no-section", "config has no [trust] section")(
    lambda e: (["trust", "list", "--config", e.config("n.conf", "[listen]\nport = 1\n")], ""))
case("trust-config-bad-value", "[trust] crl: 'sometimes' is not one of hard, soft, off")(
    lambda e: (["trust", "list", "--config", e.config("b.conf", "[trust]\nstore = s\ncrl = sometimes\n")], ""))


@case("trust-store-broken", "the trust store cannot be loaded", "junk.pem: not a PEM file")
def _broken_store(e: Env) -> tuple[list[str], str]:
    (e.pki.store / "junk.pem").write_text("not a certificate\n")
    return ["trust", "list", *_store(e)], ""


case("trust-add-missing-file", "certgate trust add: ", "missing.pem: cannot read: No such file")(
    lambda e: (["trust", "add", *_store(e), str(e.tmp / "missing.pem")], ""))
case("trust-add-not-a-certificate", "certgate trust add: ", "not a PEM file")(
    lambda e: (["trust", "add", *_store(e), e.file("junk.txt", "hello\n")], ""))
case("trust-add-private-key", "PRIVATE KEY")(
    lambda e: (["trust", "add", *_store(e), str(e.pki.client("alice").key_path)], ""))
case("trust-add-client-certificate", "is not a CA certificate", "use --pin")(
    lambda e: (["trust", "add", *_store(e), str(e.pki.client("alice").cert_path)], ""))
case("trust-add-duplicate", "is already in the store")(
    lambda e: (["trust", "add", *_store(e), str(next(e.pki.store.glob("*.pem")))], ""))
case("trust-add-pin-a-ca", "is a CA certificate; add it without --pin")(
    lambda e: (["trust", "add", "--pin", *_store(e), e.file("ca.pem", I.pem(I.ca("Other CA").cert))], ""))
case("trust-remove-unknown", "certgate trust remove: ", "'0123456789abcdef' is neither a fingerprint nor a file")(
    lambda e: (["trust", "remove", *_store(e), "0123456789abcdef"], ""))
case("trust-remove-last-ca", "this removes the last CA", "repeat with --force")(
    lambda e: (["trust", "remove", *_store(e), next(e.pki.store.glob("*.pem")).name], ""))
case("trust-remove-without-target", "the following arguments are required: FINGERPRINT-or-NAME")(
    lambda e: (["trust", "remove", *_store(e)], ""))
case("trust-show-unknown", "certgate trust show: ", "'nope' is neither a fingerprint nor a file")(
    lambda e: (["trust", "show", *_store(e), "nope"], ""))
case("trust-verify-no-certificate", "certgate trust verify: ", "holds no certificate")(
    lambda e: (["trust", "verify", *_store(e), e.file("c.crl", I.pem(I.crl(I.ca("CRL CA"))))], ""))
case("trust-import-p12-junk", "certgate trust import-p12: ", "junk.p12: cannot open")(
    lambda e: (["trust", "import-p12", *_store(e), e.file("junk.p12", b"junk"), "--password-stdin"], "pw\n"))
case("trust-import-p12-needs-password", "it needs a password")(
    lambda e: (["trust", "import-p12", *_store(e), e.file("p.p12", I.client(None, "x").p12(b"secret"))], ""))
case("trust-map-missing-file", "certgate trust map: ", "none.pem: cannot read")(
    lambda e: (["trust", "map", str(e.tmp / "none.pem")], ""))
case("trust-map-ldap-without-config", "mapping = ldap asks the directory")(
    lambda e: (["trust", "map", "--rule", "ldap", str(e.pki.client("alice").cert_path)], ""))

# --------------------------------------------------------------------------- sessions

case("sessions-config-missing", "certgate sessions list: /nonexistent.conf: ", "cannot read")(
    lambda e: (["sessions", "list", "--config", "/nonexistent.conf"], ""))
case("sessions-revoke-unknown-id", "certgate sessions revoke: ", "no live session matches id 'deadbeef00'")(
    lambda e: (["sessions", "revoke", "--config", str(e.cfg), "deadbeef00"], ""))
case("sessions-revoke-unknown-account", "no live session matches account 'nobody'")(
    lambda e: (["sessions", "revoke", "--config", str(e.cfg), "--account", "nobody"], ""))
case("sessions-revoke-short-prefix", "a session id prefix needs at least 8 characters")(
    lambda e: (["sessions", "revoke", "--config", str(e.cfg), "dead"], ""))
case("sessions-revoke-nothing", "revoke takes a session ID, or --account and/or --fingerprint")(
    lambda e: (["sessions", "revoke", "--config", str(e.cfg)], ""))
case("sessions-memory-without-admin", "keeps sessions inside the gateway process", "enable the admin API")(
    lambda e: (["sessions", "list", "--config", e.with_("m", sessions={"store": "memory"})], ""))


@case("sessions-store-will-not-open", "the session store cannot be opened", "not.db")
def _store_not_a_database(e: Env) -> tuple[list[str], str]:
    cfg = e.with_("db", sessions={"store": "sqlite:not.db"})
    (Path(cfg).parent / "not.db").write_bytes(b"this is not an SQLite database, not at all" * 100)
    return ["sessions", "list", "--config", cfg], ""


# --------------------------------------------------------------------------- passwd


def _passwords(e: Env) -> Path:
    return e.cfg.parent / "passwords"


case("passwd-no-terminal", "certgate passwd: standard input is not a terminal", "--password-stdin")(
    lambda e: (["passwd", "alice", "--config", str(e.cfg)], ""))
case("passwd-delete-unknown", "certgate passwd: ", "passwords: 'nobody' has no password")(
    lambda e: (["passwd", "nobody", "--delete", "--config", str(e.cfg)], ""))
case("passwd-folder-missing", "certgate passwd: /nonexistent/passwords: No such file or directory")(
    lambda e: (["passwd", "alice", "--password-stdin", "--file", "/nonexistent/passwords"], "pw\n"))
case("passwd-empty", "empty")(lambda e: (["passwd", "alice", "--password-stdin", "--config", str(e.cfg)], "\n"))
case("passwd-config-missing", "certgate passwd: /nonexistent.conf: ", "cannot read")(
    lambda e: (["passwd", "alice", "--password-stdin", "--config", "/nonexistent.conf"], "pw\n"))
case("passwd-file-not-set", "[login] password_file is not set")(
    lambda e: (["passwd", "alice", "--password-stdin", "--config", e.with_("np", login={"password": "upstream"})],
               "pw\n"))


@case("passwd-malformed-file", "the password file is malformed", ":1:")
def _malformed(e: Env) -> tuple[list[str], str]:
    _passwords(e).write_text("alice:not-a-hash\n")
    return ["passwd", "bob", "--password-stdin", "--config", str(e.cfg)], "pw\n"


# --------------------------------------------------------------------------- totp

case("totp-remove-unknown", "certgate totp remove: ", "'nobody' is not enrolled")(
    lambda e: (["totp", "remove", "nobody", "--config", str(e.cfg)], ""))
case("totp-enroll-no-valid-code", "certgate totp enroll: ", "no valid code after 3 attempts",
     "'alice' was not enrolled")(
    lambda e: (["totp", "enroll", "alice", "--config", str(e.cfg)], "000000\n000000\n000000\n"))
case("totp-not-configured", "[login] totp_secrets and totp_key must be set")(
    lambda e: (["totp", "list", "--config", e.with_("nt", login={"password": "upstream"})], ""))
case("totp-unknown-verb", "certgate totp: argument cmd: invalid choice: 'frob'")(
    lambda e: (["totp", "frob", "--config", str(e.cfg)], ""))

# --------------------------------------------------------------------------- webauthn

case("webauthn-remove-unknown", "certgate webauthn remove: ", "'nobody' has no security key")(
    lambda e: (["webauthn", "remove", "nobody", "--config", str(e.cfg)], ""))
case("webauthn-not-configured", "[webauthn] credentials is not set")(
    lambda e: (["webauthn", "list", "--config",
                str(write_config(e.tmp, e.pki, upstream="http://127.0.0.1:9"))], ""))
case("webauthn-config-missing", "certgate webauthn list: /nonexistent.conf: ", "cannot read")(
    lambda e: (["webauthn", "list", "--config", "/nonexistent.conf"], ""))

# --------------------------------------------------------------------------- demo-pki, demo-upstream, cockpit-auth

case("demo-pki-into-a-file", "certgate demo-pki: ")(lambda e: (["demo-pki", e.file("a-file", "x")], ""))
case("demo-upstream-bad-port", "argument --port: invalid int value: 'x'")(
    lambda e: (["demo-upstream", "--port", "x"], ""))


@case("demo-upstream-port-in-use", "certgate demo-upstream: 127.0.0.1:", "cannot listen")
def _port_in_use(e: Env) -> tuple[list[str], str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    e.busy = sock
    return ["demo-upstream", "--port", str(sock.getsockname()[1])], ""


case("cockpit-auth-unknown-option", "certgate cockpit-auth: unrecognized arguments: --frobnicate")(
    lambda e: (["cockpit-auth", "--frobnicate"], ""))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    pki = Pki(tmp_path / "pki")
    folder = tmp_path / "gw"
    folder.mkdir()
    cfg = write_config(folder, pki, upstream="http://127.0.0.1:9", extra=BASE)
    sqlite3.connect(folder / "sessions.db").close()
    return Env(tmp_path, pki, cfg)


@pytest.mark.parametrize("name", list(CASES))
def test_operator_mistake_is_one_line_and_status_2(env: Env, name: str) -> None:
    make, expected = CASES[name]
    argv, stdin = make(env)
    try:
        r = subprocess.run([CERTGATE, *argv], capture_output=True, text=True, timeout=60, input=stdin,
                           cwd=env.tmp)
    finally:
        if env.busy is not None:
            env.busy.close()
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert r.returncode == 2, (r.returncode, r.stderr, r.stdout)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and r.stderr.endswith("\n"), r.stderr
    assert lines[0].startswith("certgate")
    if expected[0].startswith("certgate"):  # the command (and verb) that refused
        assert lines[0].startswith(expected[0]), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert lines[0].isprintable()


def test_runtime_failure_is_one_line_and_status_1(env: Env) -> None:
    """Not the operator's mistake: the admin API of a gateway that does not run cannot answer (status 1)."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = env.with_("adm", sessions={"store": "memory"}, admin={"port": port})
    r = subprocess.run([CERTGATE, "sessions", "list", "--config", cfg], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith(f"certgate sessions list: http://127.0.0.1:{port}: the admin API is unreachable: ")
    assert len(r.stderr.splitlines()) == 1 and "is the gateway running?" in r.stderr and "Traceback" not in r.stderr


def test_a_no_answer_is_status_1_without_an_error_line(env: Env) -> None:
    """`trust verify` of a certificate the store refuses: the report on stdout, status 1, nothing on stderr."""
    rogue = env.pki.rogue_client("alice")
    r = subprocess.run([CERTGATE, "trust", "verify", "--store", str(env.pki.store), str(rogue.cert_path)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (1, ""), r.stderr
    assert "verdict:      REFUSED" in r.stdout


def test_every_command_has_a_case() -> None:
    """Each command of `certgate --help` has at least one operator-mistake case above."""
    from proxy.app.cli import SUBCOMMANDS

    covered = {n.split("-")[0] for n in CASES} | {n.split("-", 2)[0] + "-" + n.split("-", 2)[1] for n in CASES}
    missing = [c for c in SUBCOMMANDS if c not in covered and c != "version"]
    assert not missing, missing
