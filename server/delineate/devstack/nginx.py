"""Renders ``nginx/nginx.conf.template`` for a list of replicas (the stack, tests, compose)."""

from __future__ import annotations

from pathlib import Path

import msgspec

_PACKAGED = Path(__file__).resolve().parent / "nginx_template" / "nginx.conf.template"
TEMPLATE = (
    _PACKAGED
    if _PACKAGED.exists()
    else Path(__file__).resolve().parents[3] / "nginx" / "nginx.conf.template"
)

# For tests of clients behind poor proxies: a proxy that does not pass WebSocket upgrades,
# and one that blocks event streams. Regex locations listed first win.
NO_WEBSOCKET = """        location ~ ^/v1/(ws$|download/subscribe/) {
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade "";
            proxy_set_header Connection "";
            proxy_pass http://delineate;
        }
"""
NO_SSE = """        location ~ ^/v1/download/stream/ {
            return 403;
        }
"""


class NginxConfig(msgspec.Struct, kw_only=True):
    upstreams: list[str]
    """host:port of every replica."""
    listen: str
    prefix: str
    """A writable directory for the pid file, temp files and logs."""
    stream_timeout: str = "3600s"
    api_timeout: str = "60s"
    conn_per_ip: int = 200
    worker_processes: str = "1"
    worker_connections: int = 8192
    access_log: str = "off"
    websocket: bool = True
    sse: bool = True


def render(config: NginxConfig, template: str | None = None) -> str:
    text = TEMPLATE.read_text() if template is None else template
    extra = ("" if config.websocket else NO_WEBSOCKET) + ("" if config.sse else NO_SSE)
    values = {
        "UPSTREAMS": "\n".join(f"        server {u} max_fails=0;" for u in config.upstreams),
        "LISTEN": config.listen,
        "PREFIX": config.prefix,
        "STREAM_TIMEOUT": config.stream_timeout,
        "API_TIMEOUT": config.api_timeout,
        "CONN_PER_IP": str(config.conn_per_ip),
        "WORKER_PROCESSES": config.worker_processes,
        "WORKER_CONNECTIONS": str(config.worker_connections),
        "ACCESS_LOG": config.access_log,
        "EXTRA_LOCATIONS": extra,
    }
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    return text


def write(config: NginxConfig) -> Path:
    """Render into ``<prefix>/nginx.conf`` (creating the prefix and its temp dirs)."""
    prefix = Path(config.prefix)
    for sub in ("", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(render(config))
    return path


COMPOSE_SERVICE = "api"


def compose_config() -> NginxConfig:
    """The compose stack's nginx: the api service (its name resolves to every replica: nginx
    uses all the addresses), port 80, temp files in /tmp."""
    return NginxConfig(
        upstreams=[f"{COMPOSE_SERVICE}:3000"],
        listen="80",
        prefix="/tmp",
        worker_processes="auto",
        access_log="/dev/stdout delineate",
    )


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--compose"]:
        raise SystemExit("usage: python -m delineate.devstack.nginx --compose > compose/nginx.conf")
    sys.stdout.write(render(compose_config()))
