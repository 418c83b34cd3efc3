"""Configuration files for the processes of one benchmark run.

nginx and certgate get the same job: terminate TLS 1.3 requiring a client certificate
from the CA, forward over HTTP/1.1 with upstream keep-alive, send the client's CN as
X-Remote-User, preserve Host, pass WebSocket upgrades, and stream bodies both ways.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one benchmark: base+80, +81, +443, +451."""

    base: int

    @property
    def upstream(self) -> int:  # nginx `return 200 "hello\n"`
        return self.base + 80

    @property
    def stream(self) -> int:  # upstream_stream.py: WebSocket echo, large bodies
        return self.base + 81

    def proxy(self, name: str) -> int:
        return self.base + {"nginx": 443, "certgate": 451}[name]

    def all(self) -> list[int]:
        return [self.upstream, self.stream, self.proxy("nginx"), self.proxy("certgate")]


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def choose_ports(first_base: int = 19000) -> Ports:
    """The first base (19000, 20000, ... 31000) whose four ports are all free.

    Bases stay below the usual ephemeral range (32768+), so a load generator's
    outgoing connections never hold a port a proxy is about to listen on.
    """
    for base in range(first_base, 32000, 1000):
        ports = Ports(base)
        if all(_free(p) for p in ports.all()):
            return ports
    raise RuntimeError(f"no free set of benchmark ports between {first_base} and 32000 on 127.0.0.1")

_NGINX_COMMON = """worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
"""


def _nginx_dirs(d: Path) -> str:
    return "".join(f"  {k}_temp_path {d}/{k}_temp;\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def nginx_upstream(d: Path, port: int) -> Path:
    """The plain-HTTP upstream: one worker answering 200 "hello\\n" with keep-alive."""
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(_NGINX_COMMON.format(d=d) + f"""http {{
  access_log off;
{_nginx_dirs(d)}  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type text/plain; return 200 "hello\\n"; }}
  }}
}}
""")
    return conf


def nginx_proxy(d: Path, pki: Path, port: int, upstream_port: int, streaming: bool = False) -> Path:
    """nginx as the mTLS-terminating proxy (the reference).

    ``streaming`` (the WebSocket / large-body runs) gives nginx 64 KiB proxy buffers, the
    size of certgate's (Twisted's) reads; with the 4-8 KiB defaults and unbuffered
    proxying nginx moves a 256 MiB download ~1.5-2x slower. The main runs keep the
    defaults, so the memory figures are nginx's stock ones.
    """
    d.mkdir(parents=True, exist_ok=True)
    buffers = ("      proxy_buffer_size 64k;\n      proxy_buffers 4 64k;\n      proxy_busy_buffers_size 128k;\n"
               "      client_body_buffer_size 64k;\n") if streaming else ""
    conf = d / "nginx.conf"
    conf.write_text(_NGINX_COMMON.format(d=d) + f"""http {{
  access_log off;
{_nginx_dirs(d)}  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_max_body_size 0;
  map $ssl_client_s_dn $client_cn {{ "~(^|,)CN=(?<cn>[^,]+)" $cn; default ""; }}
  map $http_upgrade $upstream_connection {{ default upgrade; "" ""; }}
  upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl backlog=4096;
    ssl_certificate {pki}/server.pem;
    ssl_certificate_key {pki}/server.key;
    ssl_client_certificate {pki}/ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets off;
    ssl_session_cache off;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_set_header Host $http_host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $upstream_connection;
      proxy_set_header X-Remote-User $client_cn;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_read_timeout 300s;
{buffers}    }}
  }}
}}
""")
    return conf


def certgate(d: Path, pki: Path, port: int, upstream_port: int, workers: int, shared_sessions: bool) -> Path:
    """certgate in the same role; the certificate alone authorizes each request.

    ``shared_sessions`` puts the session store in SQLite (needed for workers > 1; the
    workers comparison uses it for both counts so the two runs differ only in workers).
    """
    sessions = "\n[sessions]\nstore = sqlite:sessions.db\n" if shared_sessions else ""
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "certgate.conf"
    conf.write_text(f"""[listen]
address = 127.0.0.1
port = {port}
certificate = {pki}/server.pem
key = {pki}/server.key
client_auth = need
workers = {workers}

[trust]
store = {pki}/trust.d

[upstream]
url = http://127.0.0.1:{upstream_port}

[login]
required_auth_methods = [["tls-cert"]]

[audit]
file = audit.log

[log]
level = warn
; nginx runs with access_log off; so does certgate here (the access log's cost: docs/operations.md)
access_file =
{sessions}""")
    return conf
