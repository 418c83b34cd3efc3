"""The certgate console script, the twistd plugin and demo-pki."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from proxy.app import cli

VENV_BIN = Path(sys.executable).parent


def test_help_lists_the_public_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """`certgate --help` names run, check-config, demo-pki and the management commands."""
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("run", "check-config", "demo-pki", "trust", "passwd", "totp", "sessions", "cockpit-auth"):
        assert f"  {name}" in out


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command exits 2 and says which."""
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_subcommand_resolves_to_a_function() -> None:
    """Each dispatch entry imports and names a callable (no dangling entry)."""
    import importlib

    for name, (module, func, _) in cli.SUBCOMMANDS.items():
        assert callable(getattr(importlib.import_module(module), func)), name


def test_check_config_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config exits 2 (an operator mistake) with one line per problem, 0 for a valid config."""
    bad = tmp_path / "bad.conf"
    bad.write_text("[listen]\nport = x\n")
    assert cli.main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert f"certgate check-config: {bad}: [upstream] url: is required" in err
    assert all(line.startswith(f"certgate check-config: {bad}: [") for line in err) and len(err) >= 2
    assert any(line.startswith(f"certgate check-config: {bad}: [listen] port: ") for line in err)

    from tests.blackbox import Pki, write_config

    pki = Pki(tmp_path / "pki")
    good = write_config(tmp_path, pki, upstream="http://127.0.0.1:9")
    assert cli.main(["check-config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_config_reports_a_broken_trust_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A garbage file in the trust store is named by check-config."""
    from tests.blackbox import Pki, write_config

    pki = Pki(tmp_path / "pki")
    (pki.store / "garbage.pem").write_text("not a certificate")
    cfg = write_config(tmp_path, pki, upstream="http://127.0.0.1:9")
    assert cli.main(["check-config", str(cfg)]) == 2
    assert "garbage.pem" in capsys.readouterr().err


def test_demo_pki_writes_pem_and_p12(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """demo-pki writes a CA, a localhost server cert and alice/bob as PEM and password-protected .p12."""
    assert cli.main(["demo-pki", str(tmp_path), "--password", "s3cret"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" in out
    server = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    for cn in ("alice", "bob"):
        key, cert, chain = pkcs12.load_key_and_certificates((tmp_path / f"{cn}.p12").read_bytes(), b"s3cret")
        assert cert is not None and key is not None
        assert cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == cn
        with pytest.raises(ValueError):
            pkcs12.load_key_and_certificates((tmp_path / f"{cn}.p12").read_bytes(), b"wrong")
    assert (tmp_path / "trust.d" / "demo-ca.pem").is_file()


def test_twistd_lists_the_plugin() -> None:
    """After install, `twistd --help` lists the certgate subcommand."""
    out = subprocess.run([str(VENV_BIN / "twistd"), "--help"], capture_output=True, text=True, timeout=60)
    assert "certgate" in out.stdout, out.stdout + out.stderr


def test_plugin_provides_the_twistd_interfaces() -> None:
    """The plugin object provides IPlugin and IServiceMaker with the certgate tapname."""
    import importlib.util

    from twisted.application.service import IServiceMaker
    from twisted.plugin import IPlugin
    from zope.interface.verify import verifyObject

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("certgate_plugin", root / "twisted/plugins/certgate_plugin.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert verifyObject(IServiceMaker, mod.certgate)
    assert verifyObject(IPlugin, mod.certgate)
    assert mod.certgate.tapname == "certgate"
    assert not (root / "twisted" / "__init__.py").exists()
    assert not (root / "twisted" / "plugins" / "__init__.py").exists()


def test_twistd_requires_config() -> None:
    """`twistd certgate` without --config is a usage error."""
    from twisted.python import usage

    from proxy.app.tap import Options

    with pytest.raises(usage.UsageError):
        Options().parseOptions([])


def test_demo_upstream_echoes_and_logs_what_it_received(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo upstream shows the headers it got and logs one JSON line per request (escaped)."""
    import json

    from twisted.web.test.requesthelper import DummyRequest

    from proxy.app.demo import echo_resource

    req = DummyRequest([b"reports"])
    req.uri = b"/reports?<x>"
    req.requestHeaders.addRawHeader(b"X-Remote-User", b"alice\"<b>")
    body = echo_resource().render(req)  # type: ignore[attr-defined]
    assert b"Hello, alice&quot;&lt;b&gt;" in body and b"<b>" not in body
    line = capsys.readouterr().out.strip()
    assert json.loads(line) == {"method": "GET", "path": "/reports?<x>", "x-remote-user": "alice\"<b>"}


def test_the_certgate_command_loads_no_openssl_before_it_sets_openssl_conf() -> None:
    """`certgate run` points OPENSSL_CONF at NumTickets = 0 before OpenSSL loads: importing the
    command (and the trust helpers it uses) must not load cryptography's OpenSSL."""
    probe = ("import sys, proxy.app.cli, trust.cli_errors, trust.escape; "
             "print('cryptography.hazmat.bindings._rust' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
