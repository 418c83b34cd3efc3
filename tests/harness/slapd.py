"""A real OpenLDAP ``slapd`` on free loopback ports in a temporary folder, for tests.

``Slapd(folder, pki).start(ldif)`` writes a ``slapd.conf`` (core, cosine, inetOrgPerson and a
small schema with Active Directory's ``altSecurityIdentities``, ``sAMAccountName`` and
``userPrincipalName`` under their AD OIDs), loads ``ldif`` with ``slapadd`` and runs slapd in
the foreground on ``ldap://`` (StartTLS offered) and ``ldaps://``, both with a server
certificate from the test PKI. Only the service account may read entries (anonymous reads
get nothing), so a working bind is part of every successful lookup.

A missing ``slapd``/``slapadd`` fails loudly (RuntimeError naming the Debian package); it
never skips. ``stop()`` terminates the process it started (and only that one).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from tests.harness.process import Logged
from tests.harness.wait import free_port, port_open
from trust import issue as I

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SUFFIX = "dc=example,dc=test"
SERVICE_DN = f"cn=certgate,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "directory-secret-42"

# Active Directory's attribute OIDs; the auxiliary class has a UUID-derived OID (2.25.x).
AD_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.867 NAME 'altSecurityIdentities'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 2.25.181562207795323183296622052216416542741 NAME 'certgateTestADUser'
  SUP top AUXILIARY MAY ( altSecurityIdentities $ sAMAccountName $ userPrincipalName ) )
"""


def _require(path: str, package: str) -> str:
    exe = shutil.which(Path(path).name) or (path if Path(path).exists() else None)
    if exe is None:
        raise RuntimeError(f"{path} not found: install Debian's {package} (apt-get install {package})")
    return exe


def base_ldif() -> str:
    """The suffix, ou=people, ou=services and the service account certgate binds as."""
    return f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: example
dc: example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=services,{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: {SERVICE_DN}
objectClass: person
cn: certgate
sn: certgate
userPassword: {SERVICE_PASSWORD}

"""


def person_ldif(uid: str, *, cn: str | None = None, certificate_der: bytes | None = None,
                alt_security_identities: Sequence[str] = (), upn: str | None = None,
                sam: str | None = None, mail: str | None = None, rdn: str | None = None) -> str:
    """One ``inetOrgPerson`` under ou=people (plus the AD auxiliary class when needed)."""
    lines = [f"dn: uid={rdn or uid},ou=people,{SUFFIX}", "objectClass: inetOrgPerson"]
    if alt_security_identities or upn or sam:
        lines.append("objectClass: certgateTestADUser")
    lines += [f"uid: {uid}", f"cn: {cn or uid}", f"sn: {uid}"]
    if rdn and rdn != uid:
        lines.append(f"uid: {rdn}")
    if certificate_der is not None:
        lines.append("userCertificate;binary:: " + base64.b64encode(certificate_der).decode("ascii"))
    for value in alt_security_identities:
        lines.append("altSecurityIdentities:: " + base64.b64encode(value.encode("utf-8")).decode("ascii"))
    if upn:
        lines.append(f"userPrincipalName: {upn}")
    if sam:
        lines.append(f"sAMAccountName: {sam}")
    if mail:
        lines.append(f"mail: {mail}")
    return "\n".join(lines) + "\n\n"


class Slapd:
    """One slapd process serving ``dc=example,dc=test`` from an mdb database in ``folder``."""

    def __init__(self, folder: Path, ca: I.Issued, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> None:
        self.folder = Path(folder)
        self.ca = ca
        self.hosts = tuple(hosts)  # the names in slapd's server certificate
        self.port = 0
        self.tls_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._child: Logged | None = None
        self.ca_file = self.folder / "directory-ca.pem"
        self.password_file = self.folder / "bind-password"

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def _write_conf(self) -> Path:
        f = self.folder
        (f / "db").mkdir(parents=True, exist_ok=True)
        (f / "certgate-ad.schema").write_text(AD_SCHEMA)
        server = I.server(self.ca, self.hosts)
        cert, key = server.write(f, "slapd-server")
        self.ca_file.write_bytes(I.pem(self.ca.cert))
        self.password_file.write_text(SERVICE_PASSWORD + "\n")
        self.password_file.chmod(0o600)
        conf = f / "slapd.conf"
        conf.write_text(f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {f}/certgate-ad.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {f}/slapd.pid
argsfile {f}/slapd.args
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
TLSCACertificateFile {self.ca_file}
database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "cn=admin,{SUFFIX}"
directory {f}/db
index objectClass eq
index uid,userPrincipalName,sAMAccountName,altSecurityIdentities,mail eq
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="{SERVICE_DN}" read by * none
""")
        return conf

    def start(self, ldif: str, timeout: float = 15.0) -> "Slapd":
        """Load ``base_ldif() + ldif`` and start slapd; wait until it accepts connections."""
        slapd = _require(SLAPD, "slapd")
        slapadd = _require(SLAPADD, "slapd")
        _require("/usr/bin/ldapadd", "ldap-utils")
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self._write_conf()
        data = self.folder / "data.ldif"
        data.write_text(base_ldif() + ldif)
        added = subprocess.run([slapadd, "-f", str(conf), "-l", str(data)], capture_output=True, text=True,
                               timeout=60)
        if added.returncode != 0:
            raise RuntimeError(f"slapadd failed ({added.returncode}): {added.stderr[-2000:]}")
        self.port, self.tls_port = free_port(), free_port()
        self._conf = conf
        self._launch(slapd, timeout)
        return self

    def _launch(self, slapd: str, timeout: float) -> None:
        urls = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/"
        self._child = Logged([slapd, "-d", "0", "-f", str(self._conf), "-h", urls], self.folder / "slapd.log")
        self.proc = self._child.proc
        self._child.wait_until(lambda: port_open(self.tls_port) and port_open(self.port), timeout,
                               f"slapd to listen on 127.0.0.1:{self.port}")

    def restart(self, timeout: float = 15.0) -> None:
        """Start slapd again on the same ports (after :meth:`stop_process`)."""
        self._launch(_require(SLAPD, "slapd"), timeout)

    def stop_process(self) -> None:
        """Terminate slapd (the folder stays, so :meth:`restart` can bring it back)."""
        if self._child is not None:
            self._child.stop(10)
        self.proc = None

    def stop(self) -> None:
        self.stop_process()
