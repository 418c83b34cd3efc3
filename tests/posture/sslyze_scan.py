"""Scan one TLS listener with sslyze and print a JSON summary (run by sslyze's own virtualenv).

Usage: ``.venv-sslyze/bin/python tests/posture/sslyze_scan.py HOST PORT SNI [CERT KEY]``

The summary holds what the posture test asserts: accepted protocol versions and suites (with
their key exchange), TLS 1.2 session-id and ticket resumption, TLS 1.3 early data,
renegotiation, compression, the client authentication sslyze detects (a probe without a
certificate; the scans present CERT/KEY when given), every scan error,
and the client CA names the server advertises (read with nassl, sslyze's OpenSSL binding,
since sslyze's reports do not include them). Not imported by the test suite: sslyze and
its pinned OpenSSL live in their own virtualenv.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

from nassl.ssl_client import ClientCertificateRequested, OpenSslVerifyEnum, OpenSslVersionEnum, SslClient
from sslyze import (ClientAuthenticationCredentials, ScanCommand, ScanCommandAttemptStatusEnum, Scanner,
                    ServerNetworkConfiguration, ServerNetworkLocation, ServerScanRequest)

VERSIONS = {
    "ssl_2_0": ScanCommand.SSL_2_0_CIPHER_SUITES, "ssl_3_0": ScanCommand.SSL_3_0_CIPHER_SUITES,
    "tls_1_0": ScanCommand.TLS_1_0_CIPHER_SUITES, "tls_1_1": ScanCommand.TLS_1_1_CIPHER_SUITES,
    "tls_1_2": ScanCommand.TLS_1_2_CIPHER_SUITES, "tls_1_3": ScanCommand.TLS_1_3_CIPHER_SUITES,
}
OTHERS = (ScanCommand.SESSION_RESUMPTION, ScanCommand.SESSION_RENEGOTIATION, ScanCommand.TLS_COMPRESSION,
          ScanCommand.TLS_1_3_EARLY_DATA)


def client_ca_names(host: str, port: int, sni: str, version: OpenSslVersionEnum) -> list[str]:
    """The CA names of the server's CertificateRequest, from a handshake without a certificate."""
    with socket.create_connection((host, port), 10) as sock:
        client = SslClient(ssl_version=version, underlying_socket=sock, ssl_verify=OpenSslVerifyEnum.NONE)
        client.set_tlsext_host_name(sni)
        try:
            client.do_handshake()
            return list(client.get_client_CA_list())
        except ClientCertificateRequested as requested:  # nassl stops to ask for a certificate
            return list(requested._ca_list)
        finally:
            client.shutdown()


def main(argv: list[str]) -> int:
    host, port, sni = argv[0], int(argv[1]), argv[2]
    creds = (ClientAuthenticationCredentials(certificate_chain_path=Path(argv[3]), key_path=Path(argv[4]))
             if len(argv) >= 5 else None)
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=sni, port=port, ip_address=host),
        network_configuration=ServerNetworkConfiguration(tls_server_name_indication=sni,
                                                         tls_client_auth_credentials=creds, network_timeout=10),
        scan_commands={*VERSIONS.values(), *OTHERS})
    # sslyze tells required from optional client authentication only when it has no certificate
    probe = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=sni, port=port, ip_address=host),
        # without a certificate sslyze waits this long for a refusal before it says "optional"
        network_configuration=ServerNetworkConfiguration(tls_server_name_indication=sni, network_timeout=3),
        scan_commands=set())
    scanner = Scanner(per_server_concurrent_connections_limit=4, concurrent_server_scans_limit=1)
    scanner.queue_scans([probe])
    probed = next(iter(scanner.get_results()))
    scanner = Scanner(per_server_concurrent_connections_limit=4, concurrent_server_scans_limit=1)
    scanner.queue_scans([request])
    result = next(iter(scanner.get_results()))
    out: dict[str, Any] = {"connectivity": result.connectivity_status.name, "errors": {}, "versions": {}}
    if result.connectivity_result is None or result.scan_result is None:
        out["connectivity_error"] = result.connectivity_error_trace and str(result.connectivity_error_trace)
        print(json.dumps(out))
        return 0
    out["client_auth"] = (probed.connectivity_result.client_auth_requirement.name
                          if probed.connectivity_result else f"probe failed: {probed.connectivity_error_trace}")
    scan = result.scan_result
    for name in (*VERSIONS, *(c.value for c in OTHERS)):
        attempt = getattr(scan, VERSIONS[name].value if name in VERSIONS else name)
        if attempt.status != ScanCommandAttemptStatusEnum.COMPLETED:
            out["errors"][name] = f"{attempt.status.name}: {attempt.error_reason} {attempt.error_trace}"
            continue
        r = attempt.result
        if name in VERSIONS:
            out["versions"][name] = [
                {"name": s.cipher_suite.name, "openssl_name": s.cipher_suite.openssl_name,
                 "ephemeral_key": type(s.ephemeral_key).__name__ if s.ephemeral_key else None}
                for s in r.accepted_cipher_suites]
        elif name == "session_resumption":
            out["session_id_resumption"] = r.session_id_resumption_result.name
            out["ticket_resumption"] = r.tls_ticket_resumption_result.name
            out["ticket_resumptions_succeeded"] = r.tls_ticket_successful_resumptions_count
            out["session_id_resumptions_succeeded"] = r.session_id_successful_resumptions_count
        elif name == "session_renegotiation":
            out["secure_renegotiation"] = r.supports_secure_renegotiation
            out["client_renegotiation_dos"] = r.is_vulnerable_to_client_renegotiation_dos
            out["client_renegotiations_succeeded"] = r.client_renegotiations_success_count
        elif name == "tls_compression":
            out["compression"] = r.supports_compression
        elif name == "tls_1_3_early_data":
            out["early_data"] = r.supports_early_data
    out["client_ca_names"] = {v.name: client_ca_names(host, port, sni, v)
                              for v in (OpenSslVersionEnum.TLSV1_2, OpenSslVersionEnum.TLSV1_3)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
