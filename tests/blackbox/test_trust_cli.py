"""Black-box: `python -m trust.cli` and `certgate trust` as real processes on a real store folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from trust import issue as I

CERTGATE = Path(sys.executable).parent / "certgate"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m trust.cli ARGS` with a deadline; text output."""
    return subprocess.run([sys.executable, "-m", "trust.cli", *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])


def test_store_lifecycle_through_processes(tmp_path: Path):
    """add, list, verify, pin, import-p12 (stdin password), remove: exit codes and messages."""
    store = tmp_path / "store"
    store.mkdir()
    root = I.ca("BB Root")
    inter = I.ca("BB Issuing", issuer=root)
    (tmp_path / "root.pem").write_bytes(I.pem(root.cert))
    alice = I.client(inter, "alice")
    (tmp_path / "alice.pem").write_bytes(alice.chain_pem())
    (tmp_path / "inter.p12").write_bytes(alice.p12(b"pw"))

    r = run("add", "--store", str(store), str(tmp_path / "root.pem"))
    assert r.returncode == 0 and "added root CA CN=BB Root,O=certgate" in r.stdout, r.stderr
    r = run("--store", str(store), "verify", str(tmp_path / "alice.pem"))
    assert r.returncode == 0 and "ACCEPTED" in r.stdout and "account:      alice" in r.stdout
    r = run("import-p12", "--store", str(store), str(tmp_path / "inter.p12"), "--password-stdin", stdin=b"pw\n")
    assert r.returncode == 0 and "added intermediate CA CN=BB Issuing" in r.stdout, r.stderr
    r = run("list", "--store", str(store))
    assert r.returncode == 0 and r.stdout.count("\nCA ") == 2
    (tmp_path / "inter.crl").write_bytes(I.pem(I.crl(inter, [alice.cert.serial_number])))
    assert run("add", "--store", str(store), str(tmp_path / "inter.crl")).returncode == 0
    r = run("verify", "--store", str(store), str(tmp_path / "alice.pem"))
    assert r.returncode == 1 and "reason:       revoked" in r.stdout
    r = run("remove", "--store", str(store), root.fingerprint)
    assert r.returncode == 0 and "removed CA CN=BB Root" in r.stdout
    r = run("add", "--store", str(store), str(tmp_path / "alice.pem"))
    assert r.returncode == 2 and "is not a CA certificate" in r.stderr and r.stdout == ""
    assert r.stderr.startswith("certgate trust add: ") and r.stderr.count("\n") == 1
    # nothing but the store files: no temporaries left behind by the atomic writes
    assert sorted(p.name for p in store.iterdir()) == ["BB-Issuing.crl", "BB-Issuing.pem"]


def test_console_script_dispatches_to_trust(tmp_path: Path):
    """`certgate trust list --store DIR` reaches trust.cli.main through the console script."""
    store = tmp_path / "s"
    store.mkdir()
    (store / "root.pem").write_bytes(I.pem(I.ca("Script Root").cert))
    r = subprocess.run([str(CERTGATE), "trust", "list", "--store", str(store)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "1 CA, 0 pinned, 0 CRL" in r.stdout and "CN=Script Root,O=certgate" in r.stdout
    r = subprocess.run([str(CERTGATE), "trust", "show", "--store", str(store), "nope"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr == f"certgate trust show: {store}: 'nope' is neither a fingerprint nor " \
        "a file of the trust store\n"
