"""trust.cli: every `certgate trust` verb and its error paths, in-process with capsys."""

from __future__ import annotations

import datetime as dt
import io
import os
import sys
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from proxy.app import cli as certgate
from trust import issue as I
from trust.folder import folder_signature
from trust.store import load_store

NOW = I.utcnow()
DAY = dt.timedelta(days=1)
ROOT = I.ca("CLI Root")


def main(argv: list[str]) -> int:
    """``certgate trust ARGV`` through the dispatcher, which prints a refusal as one line (status 2)."""
    return certgate.main(["trust", *argv])
INTER = I.ca("CLI Issuing", issuer=ROOT)


class Env:
    """A store folder plus input files, and a runner returning (status, stdout, stderr)."""

    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp, self.capsys = tmp, capsys
        self.store = tmp / "store"
        self.store.mkdir()

    def file(self, name: str, data: bytes) -> str:
        p = self.tmp / name
        p.write_bytes(data)
        return str(p)

    def run(self, *args: str, store: bool = True) -> tuple[int, str, str]:
        self.capsys.readouterr()
        argv = [args[0], *(["--store", str(self.store)] if store else []), *args[1:]]
        rc = main(argv)
        out, err = self.capsys.readouterr()
        return rc, out, err


@pytest.fixture
def env(tmp_path: Path, capsys) -> Env:
    return Env(tmp_path, capsys)


@pytest.fixture
def filled(env: Env) -> Env:
    """A store holding ROOT and INTER."""
    assert env.run("add", env.file("root.pem", I.pem(ROOT.cert)))[0] == 0
    assert env.run("add", env.file("inter.pem", I.pem(INTER.cert)))[0] == 0
    return env


def test_usage_errors(env: Env):
    """No verb, unknown verb, or no store: every one a usage error: one line, status 2."""
    assert env.run("list", store=False)[0:1] == (2,)
    assert "use --store DIR or --config FILE" in env.run("list", store=False)[2]
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0


def test_list_empty_and_filled(filled: Env):
    """list shows kind, file, not-after, days left, fingerprint and subject; warnings below."""
    short = I.ca("Short CA", not_before=NOW - DAY, not_after=NOW + 12 * DAY + dt.timedelta(hours=1))
    assert filled.run("add", filled.file("short.pem", I.pem(short.cert)))[0] == 0
    rc, out, _ = filled.run("list")
    assert rc == 0
    assert "3 CA, 0 pinned, 0 CRL" in out
    line = next(x for x in out.splitlines() if x.startswith("CA     CLI-Root.pem"))
    assert ROOT.fingerprint in line and "CN=CLI Root,O=certgate" in line and " 3649  " in line
    assert "! expires in 12 days" in out
    (filled.store / "notes.txt").write_text("x")
    assert "ignored notes.txt" in filled.run("list")[1]


def test_list_on_empty_and_broken_store(env: Env):
    """An empty store says how to start; a broken one names every broken file and exits 1."""
    rc, out, _ = env.run("list")
    assert rc == 0 and "(empty" in out
    (env.store / "bad.pem").write_bytes(b"junk")
    (env.store / "worse.crt").write_bytes(b"")
    rc, _, err = env.run("list")
    assert rc == 2 and "bad.pem: not a PEM file" in err and "worse.crt: file is empty" in err
    assert main(["list", "--store", str(env.tmp / "nope")]) == 2
    assert "trust store folder does not exist" in env.capsys.readouterr().err


def test_add_ca_refusals(filled: Env):
    """add refuses non-CAs, expired, weak keys, duplicates, garbage and keys; nothing written."""
    before = folder_signature(filled.store)
    cases = [
        (I.client(INTER, "alice").cert_pem(), "is not a CA certificate"),
        (I.pem(I.ca("Old", not_before=NOW - 9 * DAY, not_after=NOW - DAY).cert), "expired on"),
        (I.pem(I.ca("Weak", key_type="rsa1024").cert), "1024 bits"),
        (I.pem(ROOT.cert), "already in the store as CLI-Root.pem"),
        (b"hello world", "not a PEM file"),
        (ROOT.key_pem(), "PRIVATE KEY"),
        (b"", "file is empty"),
        (I.pem(I.ca("Twice").cert) * 2, "appears twice"),
    ]
    for data, message in cases:
        rc, out, err = filled.run("add", filled.file("in.pem", data))
        assert rc == 2, (message, out)
        assert message in err and err.startswith("certgate trust add: ") and err.count("\n") == 1
    rc, _, err = filled.run("add", str(filled.tmp / "missing.pem"))
    assert rc == 2 and "cannot read" in err and "missing.pem" in err
    assert folder_signature(filled.store) == before


def test_add_bundle_name_and_crl(filled: Env):
    """A bundle adds each CA to its own file; --name; CRLs added then replaced by newer ones."""
    a, b = I.ca("Bundle A"), I.ca("Bundle B", key_type="ed25519")
    rc, out, _ = filled.run("add", filled.file("b.pem", I.pem(a.cert) + I.pem(b.cert)))
    assert rc == 0 and "Bundle-A.pem" in out and "Bundle-B.pem" in out
    rc, _, err = filled.run("add", filled.file("c.pem", I.pem(I.ca("C1").cert) + I.pem(I.ca("C2").cert)),
                            "--name", "x.pem")
    assert rc == 2 and "--name can only be used" in err
    rc, out, _ = filled.run("add", filled.file("d.pem", I.pem(I.ca("Named").cert)), "--name", "corp")
    assert rc == 0 and (filled.store / "corp.pem").exists()
    rc, _, err = filled.run("add", filled.file("e.pem", I.pem(I.ca("Hidden").cert)), "--name", ".sneaky")
    assert rc == 2 and "visible file name" in err
    # CRLs
    crl1 = I.crl(INTER, [1, 2], last_update=NOW - DAY)
    rc, out, _ = filled.run("add", filled.file("1.crl", I.pem(crl1)))
    assert rc == 0 and "added the CRL of CN=CLI Issuing,O=certgate as CLI-Issuing.crl (2 revoked)" in out
    crl2 = I.crl(INTER, [1, 2, 3])
    rc, out, _ = filled.run("add", filled.file("2.crl", I.der(crl2)))
    assert rc == 0 and "replaced the CRL" in out
    assert len(load_store(filled.store, now=NOW).crls) == 1
    rc, _, err = filled.run("add", filled.file("3.crl", I.pem(crl1)))
    assert rc == 2 and "older than CLI-Issuing.crl" in err
    expired = I.crl(INTER, [], last_update=NOW - 9 * DAY, next_update=NOW - DAY)
    assert "expired on" in filled.run("add", filled.file("4.crl", I.pem(expired)))[2]
    foreign = I.crl(I.ca("Stranger"), [])
    rc, _, err = filled.run("add", filled.file("5.crl", I.pem(foreign)))
    assert rc == 2 and "would not load" in err and "not a CA of this store" in err
    forged = I.crl(INTER, [], signer=I.ca("CLI Issuing"))
    rc, _, err = filled.run("add", filled.file("6.crl", I.pem(forged)))
    assert rc == 2 and "signed by another key" in err


def test_add_pin(filled: Env):
    """--pin adds a client certificate under pinned/; CAs, serverAuth, no-EKU, expired refused."""
    selfie = I.client(None, "selfie")
    rc, out, _ = filled.run("add", filled.file("s.pem", selfie.chain_pem()), "--pin")
    assert rc == 0 and "pinned CN=selfie as pinned/selfie.pem" in out
    assert load_store(filled.store, now=NOW).pinned_entry(selfie.fingerprint) is not None
    rc, out, _ = filled.run("add", filled.file("c.pem", I.client(INTER, "chained").chain_pem()), "--pin")
    assert rc == 0 and "1 other certificate(s)" in out
    refusals = [
        (I.pem(ROOT.cert), "is a CA certificate"),
        (I.pem(I.server(INTER).cert), "serverAuth, not clientAuth"),
        (I.pem(I.client(None, "noeku", eku=None).cert), "unsafe_allow_missing_eku"),
        (I.pem(I.client(None, "old", not_before=NOW - 9 * DAY, not_after=NOW - DAY).cert), "expired on"),
        (selfie.cert_pem(), "already in the store as pinned/selfie.pem"),
        (I.pem(I.crl(ROOT)), "--pin needs a certificate file"),
    ]
    for data, message in refusals:
        rc, _, err = filled.run("add", filled.file("p.pem", data), "--pin")
        assert rc == 2 and message in err, (message, err)
    twin = I.client(None, "selfie")  # same CN, other key: a different file name is chosen
    rc, out, _ = filled.run("add", filled.file("t.pem", twin.cert_pem()), "--pin")
    assert rc == 0 and f"pinned/selfie-{twin.fingerprint[:12]}.pem" in out


def test_add_pin_missing_eku_allowed_by_config(env: Env):
    """With unsafe_allow_missing_eku = yes in the config, a no-EKU certificate can be pinned."""
    cfg = env.tmp / "certgate.conf"
    cfg.write_text("[trust]\nstore = store\nunsafe_allow_missing_eku = yes\n")
    cert = env.file("n.pem", I.client(None, "noeku", eku=None).cert_pem())
    assert main(["add", "--config", str(cfg), cert, "--pin"]) == 0
    env.capsys.readouterr()
    assert main(["list", "--config", str(cfg)]) == 0
    assert "no EKU: accepted only with unsafe_allow_missing_eku = yes" in env.capsys.readouterr().out


def test_config_errors(env: Env):
    """--config: unreadable, unparsable, no [trust], problems in [trust] -> clear errors."""
    assert main(["list", "--config", str(env.tmp / "missing.conf")]) == 2
    assert "cannot read config" in env.capsys.readouterr().err
    bad = env.tmp / "bad.conf"
    bad.write_text("no section header\n")
    assert main(["list", "--config", str(bad)]) == 2
    assert "cannot be parsed" in env.capsys.readouterr().err
    bad.write_text("[listen]\nport = 1\n")
    assert main(["list", "--config", str(bad)]) == 2
    assert "has no [trust] section" in env.capsys.readouterr().err
    bad.write_text("[trust]\nstore = store\ncrl = sometimes\n")
    assert main(["list", "--config", str(bad)]) == 2
    assert "[trust] crl: 'sometimes' is not one of hard, soft, off" in env.capsys.readouterr().err
    assert main(["list", "--config", str(bad), "--store", "x"]) == 2  # mutually exclusive


def test_remove(filled: Env):
    """remove by fingerprint, prefix or name; dependent CRLs go too; unknown targets refused."""
    pinned = I.client(None, "gone")
    assert filled.run("add", filled.file("p.pem", pinned.cert_pem()), "--pin")[0] == 0
    assert filled.run("add", filled.file("i.crl", I.pem(I.crl(INTER, [5]))))[0] == 0
    rc, out, _ = filled.run("remove", pinned.fingerprint.upper())
    assert rc == 0 and "removed pinned CN=gone (pinned/gone.pem" in out
    rc, out, _ = filled.run("remove", INTER.fingerprint[:10])
    assert rc == 0 and "removed CA CN=CLI Issuing" in out and "removed CRL CLI-Issuing.crl too" in out
    assert sorted(os.listdir(filled.store)) == ["CLI-Root.pem", "pinned"]
    rc, _, err = filled.run("remove", "CLI-Root.pem")  # the last CA: refused without --force
    assert rc == 2 and "removes the last CA" in err and "--force" in err
    assert sorted(os.listdir(filled.store)) == ["CLI-Root.pem", "pinned"]
    rc, out, _ = filled.run("remove", "CLI-Root.pem", "--force")
    assert rc == 0 and os.listdir(filled.store) == ["pinned"]
    rc, _, err = filled.run("remove", "nothing-here")
    assert rc == 2 and "neither a fingerprint nor a file" in err
    rc, _, err = filled.run("remove", "0" * 64)
    assert rc == 2


def test_remove_refusals_and_repair(filled: Env):
    """A fingerprint inside a multi-certificate file is refused; a broken store is repaired by name."""
    (filled.store / "bundle.pem").write_bytes(I.pem(I.ca("B1").cert) + I.pem(I.ca("B2").cert))
    fp = next(e.fingerprint for e in load_store(filled.store, now=NOW).entries if e.file == "bundle.pem")
    rc, _, err = filled.run("remove", fp)
    assert rc == 2 and "bundle.pem holds 2 certificates" in err
    assert filled.run("remove", "bundle.pem")[0] == 0
    (filled.store / "broken.pem").write_bytes(b"junk")
    rc, _, err = filled.run("remove", ROOT.fingerprint)
    assert rc == 2 and "broken.pem" in err and "remove a broken file by name" in err
    rc, out, _ = filled.run("remove", "broken.pem")
    assert rc == 0 and not (filled.store / "broken.pem").exists()


def test_remove_takes_dependent_crl_files(filled: Env):
    """Removing the CA that signed a CRL also removes the file holding that CRL."""
    crl = I.crl(INTER, [])
    (filled.store / "mixed.pem").write_bytes(I.pem(I.ca("Mixed").cert) + I.pem(crl))
    rc, out, _ = filled.run("remove", "CLI-Issuing.pem")
    assert rc == 0 and "removed CRL mixed.pem too" in out  # the dependent file goes with it


def test_show(filled: Env):
    """show prints one entry in detail; CRLs list their revoked serials; unknown target refused."""
    rc, out, _ = filled.run("show", ROOT.fingerprint)
    assert rc == 0 and "kind:           CA" in out and "self-signed:    yes" in out and "days left" in out
    assert filled.run("add", filled.file("i.crl", I.pem(I.crl(INTER, [0xABC]))))[0] == 0
    rc, out, _ = filled.run("show", "CLI-Issuing.crl")
    assert rc == 0 and "revoked serial: abc since" in out
    rc, _, err = filled.run("show", "deadbeef00")
    assert rc == 2 and "neither a fingerprint nor a file" in err


def test_verify(filled: Env):
    """verify prints the verdict, chain and account; exit 0 only when accepted and mapped."""
    alice = I.client(INTER, "alice")
    rc, out, _ = filled.run("verify", filled.file("alice.pem", alice.chain_pem()))
    assert rc == 0
    assert "verdict:      ACCEPTED" in out and "account:      alice (mapping = cn)" in out
    assert "[CLI-Issuing.pem]" in out
    rc, out, _ = filled.run("verify", filled.file("leaf.pem", alice.cert_pem()),
                            "--chain", filled.file("chain.pem", I.pem(INTER.cert)))
    assert rc == 0
    rc, out, _ = filled.run("verify", filled.file("s.pem", I.server(INTER).chain_pem()))
    assert rc == 1 and "REFUSED" in out and "reason:       wrong-usage" in out
    rc, out, _ = filled.run("verify", filled.file("two.pem", I.client(INTER, ["alice", "admin"]).chain_pem()))
    assert rc == 1 and "ACCEPTED" in out and "account:      none: the subject has 2 CN attributes" in out
    rogue = I.client(I.ca("CLI Root"), "alice")
    rc, out, _ = filled.run("verify", filled.file("r.pem", rogue.cert_pem()))
    assert rc == 1 and "bad-signature" in out
    rc, _, err = filled.run("verify", filled.file("k.pem", alice.key_pem()))
    assert rc == 2 and "PRIVATE KEY" in err
    rc, _, err = filled.run("verify", filled.file("crl.pem", I.pem(I.crl(ROOT))))
    assert rc == 2 and "holds no certificate" in err


def test_verify_uses_config_policy(env: Env):
    """verify applies the [trust] policy from --config (here: max_depth)."""
    env.run("add", env.file("root.pem", I.pem(ROOT.cert)))
    cfg = env.tmp / "c.conf"
    cfg.write_text("[trust]\nstore = store\nmax_depth = 1\n")
    leaf = env.file("l.pem", I.client(INTER, "alice").chain_pem())
    env.capsys.readouterr()
    assert main(["verify", "--config", str(cfg), leaf]) == 1
    assert "chain-too-deep" in env.capsys.readouterr().out
    cfg.write_text("[trust]\nstore = store\nmax_depth = 2\n")
    assert main(["verify", "--config", str(cfg), leaf]) == 0


def test_import_p12(filled: Env, monkeypatch):
    """import-p12 takes CA certificates (skipping known ones) or pins the client certificate."""
    new_root = I.ca("P12 Root")
    new_inter = I.ca("P12 Issuing", issuer=new_root)
    user = I.client(new_inter, "p12user")
    user.chain = [new_inter.cert, new_root.cert, ROOT.cert]
    p12 = filled.file("u.p12", user.p12(b"s3cret"))
    pw = filled.file("pw.txt", b"s3cret\n")
    rc, out, _ = filled.run("import-p12", p12, "--password-file", pw)
    assert rc == 0, out
    assert "added intermediate CA CN=P12 Issuing" in out and "added root CA CN=P12 Root" in out
    assert "skipped CN=CLI Root,O=certgate: already in the store" in out
    assert "private key in" in out and "was not imported" in out
    assert not any(b"PRIVATE" in p.read_bytes() for p in filled.store.rglob("*") if p.is_file())
    # the same again: nothing new
    rc, _, err = filled.run("import-p12", p12, "--password-file", pw)
    assert rc == 2 and "nothing to add" in err
    # pin via --password-stdin
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"s3cret\n")))
    rc, out, _ = filled.run("import-p12", p12, "--password-stdin", "--pin")
    assert rc == 0 and "pinned CN=p12user" in out


def test_import_p12_errors(filled: Env, monkeypatch):
    """Wrong password, missing password (no terminal), garbage, no CA inside: clear errors."""
    lone = I.client(None, "lone")
    p12 = filled.file("lone.p12", lone.p12(b"pw"))
    rc, _, err = filled.run("import-p12", p12, "--password-file", filled.file("bad.txt", b"nope\n"))
    assert rc == 2 and "wrong password or not a PKCS#12 file" in err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    rc, _, err = filled.run("import-p12", p12)
    assert rc == 2 and "needs a password" in err
    rc, _, err = filled.run("import-p12", filled.file("junk.p12", b"junk"), "--password-file",
                            filled.file("p.txt", b"pw"))
    assert rc == 2 and "not a PKCS#12 file" in err
    rc, _, err = filled.run("import-p12", filled.file("open.p12", lone.p12(None)))
    assert rc == 2 and "holds no CA certificate" in err and "use --pin" in err
    assert filled.run("import-p12", filled.file("open2.p12", lone.p12(None)), "--pin")[0] == 0


def test_map(env: Env, tmp_path: Path):
    """map shows what a certificate maps to, with rule overrides and a login check."""
    cert = env.file("a.pem", I.client(INTER, "alice", emails=["alice@example.com"]).cert_pem())
    rc, out, _ = env.run("map", cert, store=False)
    assert rc == 0 and "account:      alice" in out and "san-email=alice@example.com" in out
    assert env.run("map", cert, "--account", "alice", store=False)[0] == 0
    rc, out, _ = env.run("map", cert, "--account", "Alice", store=False)
    assert rc == 1 and "refused (not an exact match)" in out
    assert env.run("map", cert, "--account", "CORP\\alice", "--strip-domain", store=False)[0] == 0
    rc, out, _ = env.run("map", cert, "--rule", "san-email", store=False)
    assert rc == 0 and "account:      alice@example.com" in out
    rc, out, _ = env.run("map", cert, "--rule", "regex", "--regex", "CN=(ali)ce", store=False)
    assert rc == 0 and "account:      ali" in out
    mapfile = env.file("m.map", b"subject:CN=alice svc-alice\n")
    rc, out, _ = env.run("map", cert, "--rule", "file", "--map-file", mapfile, store=False)
    assert rc == 0 and "account:      svc-alice" in out
    nul = env.file("n.pem", I.client(INTER, "alice\x00.evil").cert_pem())
    rc, out, _ = env.run("map", nul, store=False)
    assert rc == 1 and "U+0000" in out and "\x00" not in out
    rc, _, err = env.run("map", str(tmp_path / "none.pem"), store=False)
    assert rc == 2 and "cannot read" in err


def test_map_uses_config_mapping(env: Env):
    """map reads the [trust] mapping rule from --config."""
    cfg = env.tmp / "c.conf"
    cfg.write_text("[trust]\nstore = store\nmapping = san-upn\n")
    cert = env.file("u.pem", I.client(INTER, "alice", upns=["alice@CORP.EXAMPLE"]).cert_pem())
    env.capsys.readouterr()
    assert main(["map", "--config", str(cfg), cert]) == 0
    assert "account:      alice@CORP.EXAMPLE" in env.capsys.readouterr().out


def test_serveronly_eku_oid_name():
    """EKU names in messages are readable (sanity for the wrong-usage message)."""
    from trust.certinfo import eku_name
    assert eku_name(ExtendedKeyUsageOID.SERVER_AUTH) == "serverAuth"


def test_terminal_escapes_in_subjects_are_neutralised(filled: Env):
    """A subject with ESC / newline characters never reaches the operator's terminal raw."""
    evil = I.client(INTER, "x\x1b[2J\nfake: ACCEPTED")
    rc, out, _ = filled.run("verify", filled.file("e.pem", evil.chain_pem()))
    assert "\x1b" not in out and "\nfake" not in out
    rc, _, err = filled.run("add", filled.file("e2.pem", evil.cert_pem()))
    assert rc == 2 and "\x1b" not in err and "\\x1b" in err


def test_list_with_config_shows_the_server_certificate_and_warns_before_it_expires(filled: Env):
    """`trust list --config` adds the [listen] certificate; within expiry_warning_days it is flagged."""
    for days, warned in ((200, False), (5, True)):
        srv = I.server(ROOT, days=days)
        (filled.tmp / "server.pem").write_bytes(srv.cert_pem())
        conf = filled.tmp / "certgate.conf"
        conf.write_text(f"[listen]\ncertificate = server.pem\n\n[trust]\nstore = {filled.store}\n")
        rc, out, _ = filled.run("list", "--config", str(conf), store=False)
        assert rc == 0 and f"server certificate {filled.tmp / 'server.pem'}" in out, out
        assert srv.fingerprint in out
        assert ("! expires in 4 days" in out) is warned, out
