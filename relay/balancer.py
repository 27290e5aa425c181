"""The local fleet's balancer: nginx, round-robin over N gateway processes.

``relay dev --gateways N`` (N > 1) runs N gateway processes, each with its own memory (its
own breakers, last-known-good copies, rate-limit buckets), on their own loopback ports,
and nginx on the printed port in front of them. nginx runs in the foreground
(``-g 'daemon off;'``) as one more supervised process (``balancer``), with its prefix,
configuration, pid file, temp paths and logs under ``<state dir>/balancer/``.

Why nginx and not the gateway server's multi-process mode (one port, N worker processes):
the kernel hands each new connection to whichever worker accepts it first, which is not
round-robin (with keep-alive clients one busy worker can get most of the traffic), and the
workers share one parent, so one cannot be restarted alone. nginx picks a gateway per
request, in turn, and each gateway is a process of its own that ``relay restart gateway-2``
restarts while the others serve.

Settings (and why):

- ``upstream`` with every gateway port, round-robin (nginx's default), ``keepalive``
  connections to them (HTTP/1.1, ``Connection: ""``), as a balancer in front of a fleet
  keeps them; ``max_fails=1 fail_timeout=2s``: a gateway being restarted is skipped for 2 s.
- ``proxy_next_upstream error`` and no ``non_idempotent``: a request goes to the next
  gateway only when the one chosen could not be reached or failed before answering, and a
  non-idempotent request (POST, PATCH, LOCK) is never sent to a second gateway once one got
  it: the first may already have applied it (or queued it as a deferred write), so a
  second try could apply a driver's event or a dispatch assignment twice. No ``timeout``
  either: a gateway that is slow is slow because a module is, and a second gateway would
  wait on the same module (the gateways' own deadlines and breakers decide).
- ``X-Forwarded-For $remote_addr``: the address nginx saw, replacing whatever the client
  wrote; the gateways get ``RELAY_TRUSTED_PROXIES=127.0.0.1``, so anonymous rate limits
  still key on the client and not on the balancer (gateway.edge.clientaddr).
- ``proxy_request_buffering off``, ``client_max_body_size 0``: the gateways enforce their
  own body limit and read timeouts (413, 408), as they do without a balancer.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"
NGINX_CANDIDATES = ("/usr/sbin/nginx",)  # Debian's; /usr/sbin is not on every PATH
BALANCER_NAME = "balancer"
# Idle keep-alive connections nginx keeps to each gateway process: below the gateway
# server's own keep-alive timeout (uvicorn: 5 s) nginx closes them after 4 s.
KEEPALIVE_CONNECTIONS = 32
KEEPALIVE_TIMEOUT_SECONDS = 4
# Longer than any route's deadline plus the fallback's store call: the gateway answers
# first (a degraded answer or a 503), never nginx's 504.
READ_TIMEOUT_SECONDS = 30
NOT_INSTALLED = (
    "nginx is not installed: `relay dev --gateways N` (N > 1) puts it in front of the gateways "
    "(apt-get install nginx-light, or `make dev GATEWAYS=N`, which installs it)"
)


def nginx_binary() -> str | None:
    """Debian's nginx, wherever it is; None if it is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in NGINX_CANDIDATES if os.access(c, os.X_OK)), None)


def preamble(prefix: Path) -> str:
    """The top of an nginx.conf whose files all live under ``prefix``, up to and including
    ``http {``: the balancer's and the front door's (relay.frontdoor) alike."""
    # nginx started as root runs its workers as `nobody`, who cannot write the temp paths
    # under the state dir: locally they run as whoever runs relay dev.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server_tokens off;
    keepalive_requests 100000;
"""


def upstream(name: str, gateway_ports: Sequence[int]) -> str:
    """An ``upstream`` block over gateway processes: round-robin (nginx's default), each
    skipped for 2 s after failing, with keep-alive connections to them."""
    servers = "\n".join(
        f"        server {HOST}:{port} max_fails=1 fail_timeout=2s;" for port in gateway_ports
    )
    return f"""    upstream {name} {{
{servers}
        keepalive {KEEPALIVE_CONNECTIONS};
        keepalive_timeout {KEEPALIVE_TIMEOUT_SECONDS}s;
    }}
"""


def proxy_location(upstream_name: str) -> str:
    """``location /`` proxying to ``upstream_name`` with the rules of this module's
    docstring: the client's address in X-Forwarded-For, keep-alive, never a second try of a
    request that may have been applied."""
    return f"""        location / {{
            proxy_pass http://{upstream_name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # What nginx saw, not what the client wrote (RELAY_TRUSTED_PROXIES=127.0.0.1).
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_request_buffering off;
            # Unreachable or failed before answering: the next gateway. Never a second
            # gateway for a POST/PATCH once one had it (no non_idempotent), never on timeout.
            proxy_next_upstream error;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 1s;
            proxy_read_timeout {READ_TIMEOUT_SECONDS}s;
            proxy_send_timeout {READ_TIMEOUT_SECONDS}s;
        }}
"""


def render_config(prefix: Path, listen_port: int, gateway_ports: Sequence[int]) -> str:
    """nginx.conf for a balancer on ``listen_port`` over ``gateway_ports`` (all loopback)."""
    if not gateway_ports:
        raise ValueError("a balancer needs at least one gateway port")
    if len(set(gateway_ports)) != len(gateway_ports) or listen_port in gateway_ports:
        raise ValueError("the balancer and every gateway need ports of their own")
    return f"""# Written by relay dev (relay/balancer.py) at each start; edits are overwritten.
{preamble(prefix)}
    # Round-robin (nginx's default) over every gateway process.
{upstream("gateways", gateway_ports)}
    server {{
        listen {HOST}:{listen_port};
        client_max_body_size 0;
{proxy_location("gateways")}    }}
}}
"""


def prepare_prefix(prefix: Path) -> None:
    """nginx's prefix directory and the temp paths :func:`preamble` names."""
    prefix.mkdir(parents=True, exist_ok=True)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(exist_ok=True)


def write_config(prefix: Path, listen_port: int, gateway_ports: Sequence[int]) -> Path:
    """Write the balancer's prefix (config, temp dirs) and return the config's path."""
    prepare_prefix(prefix)
    conf = prefix / "nginx.conf"
    conf.write_text(render_config(prefix, listen_port, gateway_ports))
    return conf


def argv(nginx: str, prefix: Path, conf: Path) -> list[str]:
    """nginx in the foreground: a supervised process like the others."""
    return [
        nginx,
        "-p",
        str(prefix),
        "-c",
        str(conf),
        "-e",
        str(prefix / "error.log"),
        "-g",
        "daemon off;",
    ]
