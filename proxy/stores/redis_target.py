"""Where a Redis session store is and how to reach it: its URL, password file and TLS options.

URLs: ``redis://[USER@]HOST:PORT/DB``, ``rediss://...`` (TLS, server certificate verified
against ``ca`` or the system store), ``redis+sentinel://[USER@]HOST:PORT[,HOST:PORT...]/SERVICE/DB``
(the master of SERVICE as the Sentinels say; after a failover the next connection goes to
the new master, and connections still open to the old one are closed within a second). The
password comes from a file (``password_file``), never from the URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from proxy.stores.interface import StoreError


@dataclass(frozen=True)
class RedisTarget:
    """A parsed store URL: where to connect and how (no secret in it)."""

    scheme: str  # redis | rediss | redis+sentinel
    hosts: tuple[tuple[str, int], ...]
    db: int
    username: str | None = None
    service: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    def safe(self) -> str:
        user = f"{self.username}@" if self.username else ""
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        svc = f"/{self.service}" if self.service else ""
        return f"{self.scheme}://{user}{hosts}{svc}/{self.db}"


def parse_url(url: str) -> RedisTarget:
    """Parse a store URL; StoreError says what is wrong (a password in the URL is refused)."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in ("redis", "rediss", "redis+sentinel"):
        raise StoreError(f"redis store: {scheme!r} is not redis://, rediss:// or redis+sentinel://")
    netloc = parts.netloc
    user = None
    if "@" in netloc:
        cred, netloc = netloc.rsplit("@", 1)
        if ":" in cred:
            raise StoreError("redis store: do not put a password in the URL; use [sessions] redis_password_file")
        user = unquote(cred) or None
    hosts = []
    for hp in netloc.split(","):
        host, _, port = hp.rpartition(":") if hp.count(":") == 1 or hp.startswith("[") else (hp, "", "")
        host = host.strip("[]")
        if not host:
            raise StoreError(f"redis store {url!r}: expected HOST:PORT")
        try:
            hosts.append((host, int(port) if port else (26379 if scheme == "redis+sentinel" else 6379)))
        except ValueError:
            raise StoreError(f"redis store {url!r}: port {port!r} is not a number") from None
    if len(hosts) > 1 and scheme != "redis+sentinel":
        raise StoreError(f"redis store {url!r}: several hosts need redis+sentinel://")
    segs = [s for s in parts.path.split("/") if s]
    service = None
    if scheme == "redis+sentinel":
        if not segs:
            raise StoreError(f"redis store {url!r}: redis+sentinel://HOST:PORT/SERVICE/DB needs the service name")
        service, segs = segs[0], segs[1:]
    try:
        db = int(segs[0]) if segs else 0
    except ValueError:
        raise StoreError(f"redis store {url!r}: database {segs[0]!r} is not a number") from None
    return RedisTarget(scheme, tuple(hosts), db, user, service)


def read_password(path: str | Path | None) -> str | None:
    """The first line of ``path`` (None without a file); StoreError when it cannot be read."""
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise StoreError(f"redis store: cannot read the password file {path}: {e.strerror}") from None
    if not text or not text[0]:
        raise StoreError(f"redis store: the password file {path} is empty")
    return text[0]


def tls_options(host: str, ca_file: str | Path | None) -> Any:
    """Client TLS for ``rediss://``: the server certificate is verified for ``host`` against
    ``ca_file`` (PEM) or the system trust store."""
    from twisted.internet import ssl

    if ca_file:
        try:
            pem = Path(ca_file).read_bytes()
        except OSError as e:
            raise StoreError(f"redis store: cannot read [sessions] redis_ca {ca_file}: {e.strerror}") from None
        trust: Any = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem)])
    else:
        trust = ssl.platformTrust()
    return ssl.optionsForClientTLS(host, trustRoot=trust)
