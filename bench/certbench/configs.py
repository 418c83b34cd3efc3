"""Configuration files for the processes of one benchmark run.

nginx and certgate get the same job: terminate TLS 1.3 requiring a client certificate
from the CA, forward over HTTP/1.1 with upstream keep-alive, send the client's CN as
X-Remote-User, preserve Host, pass WebSocket upgrades, and stream bodies both ways.
"""

from __future__ import annotations

from pathlib import Path

UPSTREAM_PORT = 18080  # nginx `return 200 "hello\n"`
STREAM_PORT = 18081    # upstream_stream.py: WebSocket echo, large bodies
PROXY_PORTS = {"nginx": 18443, "certgate": 18451}

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


def nginx_upstream(d: Path) -> Path:
    """The plain-HTTP upstream: one worker answering 200 "hello\\n" with keep-alive."""
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(_NGINX_COMMON.format(d=d) + f"""http {{
  access_log off;
{_nginx_dirs(d)}  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{UPSTREAM_PORT} backlog=4096;
    location / {{ default_type text/plain; return 200 "hello\\n"; }}
  }}
}}
""")
    return conf


def nginx_proxy(d: Path, pki: Path, port: int, upstream_port: int) -> Path:
    """nginx as the mTLS-terminating proxy (the reference)."""
    d.mkdir(parents=True, exist_ok=True)
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
      proxy_read_timeout 300s;
    }}
  }}
}}
""")
    return conf


def certgate(d: Path, pki: Path, port: int, upstream_port: int, workers: int) -> Path:
    """certgate in the same role; the certificate alone authorizes each request."""
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

[log]
level = warn
""")
    return conf
