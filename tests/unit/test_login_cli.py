"""`certgate passwd` and `certgate totp` (enroll with an injected clock, list, remove)."""

import io
import os
import stat

import pyotp

from proxy.login import cli
from proxy.login.passwords import PasswordFile
from proxy.login.totp import TotpSecrets
from trust.cli_errors import CommandError, report

T0 = 1_800_000_000.0


def run(fn, argv, stdin="", **kw):
    """(status, stdout, stderr) as the dispatcher ends the command: a refusal is one line, status 2."""
    out, err = io.StringIO(), io.StringIO()
    try:
        status = fn(argv, stdin=io.StringIO(stdin), stdout=out, stderr=err, **kw)
    except CommandError as e:
        status = report("certgate", e, err)
        assert err.getvalue().count("\n") == 1, err.getvalue()
    return status, out.getvalue(), err.getvalue()


def test_passwd_stdin_and_delete(tmp_path):
    f = tmp_path / "pw"
    st, out, err = run(cli.passwd_main, ["alice", "--file", str(f), "--password-stdin"], "s3cret\n")
    assert st == 0 and "set" in out
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert PasswordFile(f).verify("alice", "s3cret")
    st, out, _ = run(cli.passwd_main, ["alice", "--file", str(f), "--delete"])
    assert st == 0 and not PasswordFile(f).has("alice")
    st, _, err = run(cli.passwd_main, ["alice", "--file", str(f), "--delete"])
    assert st == 2 and "has no password" in err


def test_passwd_prompts_twice(tmp_path):
    f = tmp_path / "pw"
    answers = iter(["one", "two"])
    st, _, err = run(cli.passwd_main, ["alice", "--file", str(f)], prompt=lambda _: next(answers))
    assert st == 2 and "differ" in err and not f.exists()
    answers = iter(["same", "same"])
    st, _, _ = run(cli.passwd_main, ["alice", "--file", str(f)], prompt=lambda _: next(answers))
    assert st == 0 and PasswordFile(f).verify("alice", "same")


def test_passwd_empty_refused_and_bad_file_untouched(tmp_path):
    f = tmp_path / "pw"
    st, _, err = run(cli.passwd_main, ["alice", "--file", str(f), "--password-stdin"], "\n")
    assert st == 2 and "empty" in err
    f.write_text("alice:broken\n")
    st, _, err = run(cli.passwd_main, ["bob", "--file", str(f), "--password-stdin"], "x\n")
    assert st == 2 and ":1:" in err and f.read_text() == "alice:broken\n"


def test_passwd_uses_config(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("[login]\npassword = file\n")  # incomplete config: every problem is listed
    st, _, err = run(cli.passwd_main, ["alice", "--config", str(conf), "--password-stdin"], "x\n")
    assert st == 2 and "[login]" in err


def totp_args(tmp_path):
    return ["--secrets", str(tmp_path / "totp"), "--key", str(tmp_path / "totp.key")]


def test_enroll_verifies_a_code(tmp_path, monkeypatch):
    captured = {}
    real = cli.__dict__.get("_qr_text")

    def qr(uri):
        captured["uri"] = uri
        return real(uri)

    monkeypatch.setattr(cli, "_qr_text", qr)
    # the code is computed from the URI the command printed, at the injected time
    out, err = io.StringIO(), io.StringIO()

    class LazyIn(io.StringIO):
        def readline(self, *a):
            secret = pyotp.parse_uri(captured["uri"]).secret
            return pyotp.TOTP(secret).at(T0) + "\n"

    st = cli.totp_main(totp_args(tmp_path) + ["enroll", "alice"], stdin=LazyIn(), stdout=out, stderr=err,
                       now=lambda: T0)
    assert st == 0, err.getvalue()
    text = out.getvalue()
    assert captured["uri"] in text and "otpauth://totp/certgate:alice?secret=" in text
    assert "\u2588" in text or "\u2580" in text  # a terminal QR code was drawn
    s = TotpSecrets(tmp_path / "totp", tmp_path / "totp.key")
    assert s.secret("alice") == pyotp.parse_uri(captured["uri"]).secret
    assert stat.S_IMODE(os.stat(tmp_path / "totp.key").st_mode) == 0o600


def test_enroll_wrong_codes_does_not_activate(tmp_path):
    st, out, err = run(cli.totp_main, totp_args(tmp_path) + ["enroll", "alice"], "000000\n１２３４５６\n12345\n",
                       now=lambda: T0)
    assert st == 2 and "not enrolled" in err and "not valid" in out
    assert not TotpSecrets(tmp_path / "totp", tmp_path / "totp.key").enrolled("alice")


def test_enroll_no_verify_list_remove(tmp_path):
    st, out, _ = run(cli.totp_main, totp_args(tmp_path) + ["enroll", "alice", "--no-verify"], now=lambda: T0)
    assert st == 0
    st, out, _ = run(cli.totp_main, totp_args(tmp_path) + ["list"])
    assert st == 0 and out.startswith("alice\tenrolled\t2027-01-15")
    st, out, _ = run(cli.totp_main, totp_args(tmp_path) + ["remove", "alice"])
    assert st == 0
    st, _, err = run(cli.totp_main, totp_args(tmp_path) + ["remove", "alice"])
    assert st == 2 and "not enrolled" in err


def test_list_shows_unusable_secret(tmp_path):
    run(cli.totp_main, totp_args(tmp_path) + ["enroll", "alice", "--no-verify"], now=lambda: T0)
    (tmp_path / "totp.key").write_text("Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=\n")
    st, out, _ = run(cli.totp_main, totp_args(tmp_path) + ["list"])
    assert "alice\tUNUSABLE\t" in out and "cannot be decrypted" in out


def test_usage_error_is_2(tmp_path):
    st, _, err = run(cli.totp_main, ["frobnicate"])
    assert st == 2 and "invalid choice: 'frobnicate'" in err


def _png(matrix, scale=6):
    """A greyscale PNG of a module matrix (True = dark), for the QR decoder."""
    import struct
    import zlib

    h, w = len(matrix) * scale, len(matrix[0]) * scale
    raw = b"".join(b"\x00" + bytes(0 if matrix[y // scale][x // scale] else 255 for x in range(w))
                   for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _zbar(path):
    import shutil
    import subprocess

    exe = shutil.which("zbarimg")
    if exe is None:
        raise RuntimeError("zbarimg not found: install Debian's zbar-tools (apt-get install zbar-tools)")
    out = subprocess.run([exe, "--quiet", "--raw", str(path)], capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def test_terminal_qr_uses_explicit_colours_and_a_quiet_zone_and_scans(tmp_path):
    """Every cell sets both colours (no theme defaults), a 4-module white border, and it decodes."""
    import re

    import segno

    uri = "otpauth://totp/certgate:alice?secret=JBSWY3DPEHPK3PXP&issuer=certgate"
    text = cli._qr_text(uri)
    assert "\x1b[7m" not in text and "\x1b[39" not in text and "\x1b[49" not in text
    rows = []
    for line in text.rstrip("\n").split("\n"):
        cells = re.findall(r"\x1b\[(\d+);(\d+)m\u2580", line)
        rows.append([fg == "30" for fg, _ in cells])
        rows.append([bg == "40" for _, bg in cells])
    want = [[bool(b) for b in r] for r in segno.make(uri, error="m").matrix_iter(scale=1, border=4)]
    assert rows[:len(want)] == want
    assert not any(rows[0]) and not any(rows[3]) and not any(r[0] or r[3] or r[-1] for r in rows)
    (tmp_path / "term.png").write_bytes(_png(rows))
    assert _zbar(tmp_path / "term.png") == uri


def test_enroll_writes_a_scannable_qr_png(tmp_path):
    png = tmp_path / "alice.png"
    st, out, err = run(cli.totp_main, totp_args(tmp_path) + ["enroll", "alice", "--no-verify", "--qr-png", str(png)],
                       "", now=lambda: T0)
    assert st == 0, err
    assert stat.S_IMODE(os.stat(png).st_mode) == 0o600
    uri = _zbar(png)
    assert uri.startswith("otpauth://totp/certgate:alice?secret=") and uri in out
