"""https:// upstreams: verified with service-identity against the configured name, optional
client certificate towards the upstream, and ``unsafe_skip_verify`` as the only way out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness.client import Client
from tests.harness.gateway import GatewayProcess
from tests.harness.pki import Pki
from tests.harness.upstream import RecordingUpstream
from trust import issue as I


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("uptls")
    up_ca = I.ca("upstream CA")
    (d / "up-ca.pem").write_bytes(up_ca.cert_pem())
    srv = I.server(up_ca, ("upstream.internal", "127.0.0.1"))
    srv_cert, srv_key = srv.write(d, "upstream")
    proxy_client = I.client(up_ca, "certgate-proxy")
    pc_cert, pc_key = proxy_client.write(d, "proxy-client")
    other_ca = I.ca("some other CA")
    (d / "other-ca.pem").write_bytes(other_ca.cert_pem())
    return {"dir": d, "up_ca": str(d / "up-ca.pem"), "other_ca": str(d / "other-ca.pem"),
            "server": (str(srv_cert), str(srv_key)), "client": (str(pc_cert), str(pc_key)),
            "pki": Pki(d / "front")}


@pytest.fixture(scope="module")
def upstream(certs: dict[str, Any]) -> Iterator[RecordingUpstream]:
    with RecordingUpstream(tls=certs["server"], client_ca=certs["up_ca"]) as s:
        yield s


def _get(up: RecordingUpstream, certs: dict[str, Any], **tls: Any) -> tuple[int, str]:
    overrides = {"upstream": {"tls_client_certificate": certs["client"][0], "tls_client_key": certs["client"][1],
                              **tls}}
    with GatewayProcess({"upstream": up.url, "overrides": overrides}, certs["pki"]) as g:
        with Client(g.port, certs["pki"]) as c:
            r = c.request("GET", "/via-tls")
        log = g.log
    return r.status, log


def test_verified_upstream_with_client_certificate(upstream: RecordingUpstream, certs: dict[str, Any]) -> None:
    status, log = _get(upstream, certs, tls_ca=certs["up_ca"])
    assert status == 200
    assert upstream.peer_cns[-1] == "certgate-proxy"
    assert upstream.requests[-1].header_values("x-remote-user") == ["alice"]
    assert "unsafe" not in log.lower()


def test_server_name_is_checked(upstream: RecordingUpstream, certs: dict[str, Any]) -> None:
    n = len(upstream.requests)
    assert _get(upstream, certs, tls_ca=certs["up_ca"], tls_server_name="upstream.internal")[0] == 200
    assert _get(upstream, certs, tls_ca=certs["up_ca"], tls_server_name="evil.example")[0] == 502
    assert len(upstream.requests) == n + 1


def test_unknown_ca_refused_unless_unsafe_skip_verify(upstream: RecordingUpstream, certs: dict[str, Any]) -> None:
    n = len(upstream.requests)
    assert _get(upstream, certs, tls_ca=certs["other_ca"])[0] == 502
    assert len(upstream.requests) == n
    status, log = _get(upstream, certs, tls_ca=certs["other_ca"], unsafe_skip_verify=True)
    assert status == 200 and "unsafe_skip_verify" in log and "NOT verified" in log


def test_upstream_requiring_client_cert_without_one_is_502(upstream: RecordingUpstream, certs: dict[str, Any]) -> None:
    with GatewayProcess({"upstream": upstream.url, "overrides": {"upstream": {"tls_ca": certs["up_ca"]}}},
                        certs["pki"]) as g, Client(g.port, certs["pki"]) as c:
        r = c.request("GET", "/no-client-cert")
    assert r.status == 502 and b"certificate" not in r.body


def test_routes_by_prefix_with_base_path(tmp_path: Path) -> None:
    """[route:NAME] prefixes pick the upstream (longest wins); the upstream URL path is prepended."""
    pki = Pki(tmp_path)
    with RecordingUpstream() as a, RecordingUpstream() as b:
        routes = [{"name": "joc", "prefix": "/joc/", "url": b.url + "/base"}]
        with GatewayProcess({"upstream": a.url, "routes": routes}, pki) as g, Client(g.port, pki) as c:
            assert c.request("GET", "/joc/api/x?y=1").json()["target"] == "/base/joc/api/x?y=1"
            assert c.request("GET", "/other").json()["target"] == "/other"
            assert c.request("GET", "/jocx").json()["target"] == "/jocx"
        assert [r.target for r in b.requests] == ["/base/joc/api/x?y=1"]
        assert [r.target for r in a.requests] == ["/other", "/jocx"]
