"""``mapping = ldap`` end to end: real gateways, a real slapd over TLS, real TLS clients.

The directory (loaded by the test) holds one account per mapping style, two entries
claiming one UPN, and nothing for eve. The gateway forwards with the account the directory
named (``X-Remote-User``), refuses what maps to nobody or to two entries, keeps serving
cached accounts while the directory is down, and fails closed within its timeout when the
directory does not answer.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509

from tests.harness.client import request
from tests.harness.config import write_config
from tests.harness.gateway import CERTGATE, Gateway
from tests.harness.pki import Pki
from tests.harness.slapd import person_ldif, SERVICE_DN, Slapd, SUFFIX
from tests.harness.upstream import RecordingUpstream
from tests.harness.wait import free_port, wait_for
from trust import issue as I
from trust.directory import ad_dn, reversed_serial_hex


def _cert(pki: Pki, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki.client(name).cert_path.read_bytes())


def _der(pki: Pki, name: str) -> bytes:
    return I.der(_cert(pki, name))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    folder = tmp_path_factory.mktemp("directory")
    pki = Pki(folder / "pki", clients=())
    pki.client("Alice Example", name="alice")
    pki.client("Bob Builder", name="bob")
    pki.client("Frank Serial", name="frank")
    pki.client("Carol C", name="carol", upns=["carol@example.test"])
    pki.client("Dave D", name="dave", upns=["dave@example.test"])
    pki.client("Eve E", name="eve", upns=["eve@example.test"])
    pki.client("Grace G", name="grace", upns=["grace@example.test"])
    bob, frank = _cert(pki, "bob"), _cert(pki, "frank")
    ldif = (person_ldif("alice", certificate_der=_der(pki, "alice"))
            + person_ldif("bob", alt_security_identities=[f"X509:<I>{ad_dn(bob.issuer)}<S>{ad_dn(bob.subject)}"])
            + person_ldif("frank", alt_security_identities=[
                f"x509:<i>{ad_dn(frank.issuer).lower()}<sr>{reversed_serial_hex(frank)[0].lower()}"])
            + person_ldif("carol", upn="carol@example.test", sam="carol")
            + person_ldif("dave1", upn="dave@example.test")
            + person_ldif("dave2", upn="dave@example.test")
            + person_ldif("grace", upn="grace@example.test"))
    directory_ca = I.ca("directory CA")
    # the directory's certificate names 127.0.0.1 only: ldaps://localhost must fail its host check
    slapd = Slapd(folder / "slapd", directory_ca, hosts=("127.0.0.1",)).start(ldif)
    upstream = RecordingUpstream()
    try:
        yield {"folder": folder, "pki": pki, "slapd": slapd, "upstream": upstream}
    finally:
        upstream.close()
        slapd.stop()


def _gateway(world: dict[str, object], name: str, url: str, **ldap: object) -> Gateway:
    pki: Pki = world["pki"]  # type: ignore[assignment]
    slapd: Slapd = world["slapd"]  # type: ignore[assignment]
    folder = Path(world["folder"]) / name  # type: ignore[arg-type]
    folder.mkdir()
    client_auth = ldap.pop("client_auth", "want")
    settings: dict[str, object] = {"url": url, "ca_file": slapd.ca_file, "bind_dn": SERVICE_DN,
                                   "bind_password_file": slapd.password_file, "base_dn": SUFFIX,
                                   "styles": "certificate, altsecid, upn",
                                   "certificate_assertion": "serial-issuer", "timeout": 1.5}
    settings.update(ldap)
    cfg = write_config(folder, pki, upstream=world["upstream"].url,  # type: ignore[attr-defined]
                       extra={"trust": {"mapping": "ldap"}, "ldap": settings,
                              "listen": {"client_auth": client_auth}})
    return Gateway(cfg)


def _account(port: int, pki: Pki, name: str) -> tuple[int, str]:
    status, _, body = request(port, cert=pki.client(name), ca=pki.ca_pem)
    if status != 200:
        return status, body.decode("utf-8", "replace")
    import json

    headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
    return status, headers.get("x-remote-user", "")


def test_each_style_maps_and_refusals_say_why(world: dict[str, object]) -> None:
    """certificate, altsecid (<I><S> and <I><SR>) and UPN map; no entry and two entries refuse."""
    pki: Pki = world["pki"]  # type: ignore[assignment]
    slapd: Slapd = world["slapd"]  # type: ignore[assignment]
    with _gateway(world, "styles", slapd.ldaps_url) as gw:
        assert _account(gw.port, pki, "alice") == (200, "alice")  # userCertificate;binary
        assert _account(gw.port, pki, "bob") == (200, "bob")  # X509:<I>..<S>..
        assert _account(gw.port, pki, "frank") == (200, "frank")  # x509:<i>..<sr>.. (case as AD ignores it)
        assert _account(gw.port, pki, "carol") == (200, "carol")  # UPN SAN -> userPrincipalName
        # the person reads that the certificate names no account; the audit says why
        status, page = _account(gw.port, pki, "eve")
        assert status == 403 and "does not name an account" in page, page
        wait_for(lambda: "no directory entry matches the certificate" in gw.log(), 5, what="eve's reason audited")
        status, page = _account(gw.port, pki, "dave")
        assert status == 403 and "does not name an account" in page, page
        wait_for(lambda: "2 directory entries match" in gw.log(), 5, what="dave's reason audited")
        log = gw.log()
        assert "ambiguous" in log and "uid=dave1,ou=people" in log and "uid=dave2,ou=people" in log


def test_need_mode_cache_and_directory_down(world: dict[str, object]) -> None:
    """need mode: mapped accounts pass, unmapped connections close. With slapd stopped, a
    cached account still passes (no query is needed) and an uncached one is refused."""
    pki: Pki = world["pki"]  # type: ignore[assignment]
    slapd: Slapd = world["slapd"]  # type: ignore[assignment]
    with _gateway(world, "need", slapd.ldaps_url, client_auth="need") as gw:
        assert _account(gw.port, pki, "carol") == (200, "carol")
        with pytest.raises((ConnectionError, OSError)):
            request(gw.port, cert=pki.client("eve"), ca=pki.ca_pem)
        slapd.stop_process()
        try:
            assert _account(gw.port, pki, "carol") == (200, "carol")  # cached: slapd is not asked
            started = time.monotonic()
            with pytest.raises((ConnectionError, OSError)):
                request(gw.port, cert=pki.client("grace"), ca=pki.ca_pem)  # not cached, directory down
            assert time.monotonic() - started < 5
            assert "directory lookup for certificate" in gw.log() and "failed; refused" in gw.log()
        finally:
            slapd.restart()
        wait_for(lambda: _account(gw.port, pki, "grace") == (200, "grace"), timeout=10,
                 what="grace mapped once slapd is back (failures are not cached)")


class _Silent:
    """A TCP listener that accepts and never answers: a hung directory."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
                self.held.append(c)
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        for c in self.held:
            c.close()
        self.sock.close()


def test_hung_directory_fails_closed_within_the_timeout(world: dict[str, object]) -> None:
    """A directory that accepts and never answers: the connection ends after [ldap] timeout."""
    pki: Pki = world["pki"]  # type: ignore[assignment]
    silent = _Silent()
    try:
        with _gateway(world, "hung", f"ldaps://127.0.0.1:{silent.port}", timeout=1.0, client_auth="need") as gw:
            started = time.monotonic()
            with pytest.raises((ConnectionError, OSError)):
                request(gw.port, cert=pki.client("alice"), ca=pki.ca_pem, timeout=8)
            took = time.monotonic() - started
            assert 0.9 <= took < 4.5, took  # [ldap] timeout 1 s, well before the 5 s handshake deadline
            wait_for(lambda: "no answer within 1 s; refused" in gw.log(), timeout=5,
                     what="the timeout logged")
            assert silent.held, "the gateway never tried the directory"
    finally:
        silent.close()


def test_trust_map_shows_what_the_directory_answered(world: dict[str, object]) -> None:
    """`certgate trust map --config` asks the directory (here over StartTLS) and shows the
    filter, every entry it returned and the account; a wrong directory CA fails closed."""
    pki: Pki = world["pki"]  # type: ignore[assignment]
    slapd: Slapd = world["slapd"]  # type: ignore[assignment]
    folder = Path(world["folder"]) / "cli"  # type: ignore[arg-type]
    folder.mkdir()
    cfg = write_config(folder, pki, upstream="http://127.0.0.1:9", extra={
        "trust": {"mapping": "ldap"},
        "ldap": {"url": slapd.url, "starttls": "yes", "ca_file": slapd.ca_file, "bind_dn": SERVICE_DN,
                 "bind_password_file": slapd.password_file, "base_dn": SUFFIX, "styles": "upn",
                 "account_attribute": "sAMAccountName"}})
    run = subprocess.run([CERTGATE, "trust", "map", "--config", str(cfg), str(pki.client("carol").cert_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr + run.stdout
    assert "(userPrincipalName=carol@example.test)" in run.stdout
    assert "uid=carol,ou=people,dc=example,dc=test (sAMAccountName: carol; matches: upn)" in run.stdout
    assert "account:          carol" in run.stdout
    run = subprocess.run([CERTGATE, "trust", "map", "--config", str(cfg), str(pki.client("dave").cert_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert run.stdout.count("entry:") == 2 and "ambiguous" in run.stdout
    other_ca = folder / "other-ca.pem"
    other_ca.write_bytes(I.ca("not the directory's CA").cert_pem())
    cfg.write_text(cfg.read_text().replace(str(slapd.ca_file), str(other_ca)))
    run = subprocess.run([CERTGATE, "trust", "map", "--config", str(cfg), str(pki.client("carol").cert_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert "the directory cannot be asked" in run.stdout and "certificate verify failed" in run.stdout.lower(), \
        run.stdout
    # the right CA but a host name the directory's certificate does not carry
    cfg.write_text(cfg.read_text().replace(str(other_ca), str(slapd.ca_file))
                   .replace(f"url = {slapd.url}", f"url = ldaps://localhost:{slapd.tls_port}")
                   .replace("starttls = yes", "starttls = no"))
    run = subprocess.run([CERTGATE, "trust", "map", "--config", str(cfg), str(pki.client("carol").cert_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert "the directory cannot be asked" in run.stdout and "doesn't match" in run.stdout, run.stdout
    # `verify` judges the certificate only and points to `map` for the account
    run = subprocess.run([CERTGATE, "trust", "verify", "--config", str(cfg), str(pki.client("carol").cert_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and "verdict:      ACCEPTED" in run.stdout
    assert "asked of the directory (mapping = ldap)" in run.stdout, run.stdout
