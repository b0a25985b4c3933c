"""``delineate``: the server's command line (``delineate serve``)."""

from __future__ import annotations

import argparse
import logging
import math
import socket
import sys
from typing import TYPE_CHECKING

from delineate.settings import Settings, SettingsError

if TYPE_CHECKING:
    from delineate.services import Services


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from delineate import app as app_module
    from delineate import gc_tuning
    from delineate.observability import logs
    from delineate.uvicorn_ext.http import HttpLimits, limited_http_protocol
    from delineate.uvicorn_ext.sockets import LeanWebSocketProtocol

    settings = _settings_or_exit()
    app, services = app_module.build(settings)
    host = args.host or settings.host
    port = args.port or settings.port
    logs.configure(settings.log_format, settings.log_level.upper())
    warn_unknown_variables()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",
        http=limited_http_protocol(HttpLimits.from_settings(settings)),
        ws=LeanWebSocketProtocol.closing_within(settings.close_deadline_s),
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws_max_size=settings.max_ws_message_bytes,
        # Room for the drain's closes, which end by CLOSE_DEADLINE_S.
        timeout_graceful_shutdown=max(10, math.ceil(settings.close_deadline_s) + 2),
        lifespan="on",
        access_log=False,  # delineate.observability.middleware writes access lines
        log_config=None,  # keep the logging set up above
        proxy_headers=False,
    )
    gc_tuning.tune()
    draining_server_class()(config, services).run()
    return 0


def seed(args: argparse.Namespace) -> int:
    """Upload demo source files (ids divisible by 7) to the configured store."""
    import asyncio

    from delineate.services import build_storage
    from delineate.storage import demo
    from delineate.storage.keys import source_key

    settings = _settings_or_exit()
    if args.ids:
        ids = [int(i) for i in args.ids.split(",")]
    else:
        first = args.start + (-args.start % 7)
        ids = [first + 7 * i for i in range(args.count)]

    def size_for(index: int, file_id: int) -> int:
        if args.size is not None:
            return int(args.size)
        if args.ids:
            return demo.size_of(file_id)
        return demo.spread_size(index, args.max_mb * 1024 * 1024)

    async def upload() -> None:
        storage = build_storage(settings)
        await storage.start()
        try:
            for index, file_id in enumerate(ids):
                size = size_for(index, file_id)
                writer = await storage.writer(source_key(file_id))
                for chunk in demo.chunks(file_id, 1024 * 1024, size):
                    await writer.write(chunk)
                await writer.complete()
                print(f"seeded {source_key(file_id)} ({size} bytes)")
        finally:
            await storage.stop()

    asyncio.run(upload())
    return 0


def stack(args: argparse.Namespace) -> int:
    from delineate.devstack.stack import StackOptions, run

    options = StackOptions(
        replicas=args.replicas,
        port=args.port,
        seed=args.seed,
        data_dir=args.dir or "",
        redis=args.redis,
    )
    return run(options)


def warn_unknown_variables() -> None:
    import os

    from delineate.settings import unknown_variables

    for name, closest in unknown_variables(os.environ):
        logging.getLogger("delineate.settings").warning(
            "unknown setting %s is ignored (did you mean %s?)", name, closest
        )


def _settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"delineate: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def draining_server_class() -> type:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, draining the replica before it waits for connections to close."""

        def __init__(self, config: uvicorn.Config, services: Services) -> None:
            super().__init__(config)
            self.services = services

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # a person starting the server is told where the page is
                # A log line, so JSON logs stay one JSON object a line.
                url = page_url(self.config.host, self.config.port)
                logging.getLogger("delineate").info("Delineate is up: open %s", url)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await self.services.drain()
            await super().shutdown(sockets)

    return DrainingServer


def page_url(host: str, port: int) -> str:
    """The browser page's address; a wildcard bind is reachable on loopback."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="delineate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="run one server process (settings from the environment)")
    p.add_argument("--host", default=None, help="bind address (default: HOST or 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="port (default: PORT or 3000)")
    p.set_defaults(run=serve)
    p = commands.add_parser("seed", help="upload demo source files to the store (S3 or local)")
    p.add_argument("--ids", help="comma-separated file ids (default: --count ids from --start)")
    p.add_argument("--count", type=int, default=50, help="how many ids (default 50)")
    p.add_argument(
        "--start", type=int, default=70000, help="first id (rounded up to a multiple of 7)"
    )
    p.add_argument("--max-mb", type=int, default=32, help="largest seeded file in MiB (default 32)")
    p.add_argument("--size", type=int, default=None, help="give every file this many bytes")
    p.set_defaults(run=seed)
    p = commands.add_parser(
        "stack", help="run redis, SeaweedFS (S3), N replicas and nginx on loopback until Ctrl-C"
    )
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--port", type=int, default=8080, help="nginx's port (default 8080)")
    p.add_argument("--seed", type=int, default=50, help="demo files to upload (default 50)")
    p.add_argument("--dir", help="where data and logs go (default: a new temp dir)")
    p.add_argument(
        "--redis",
        choices=("single", "cluster", "sentinel"),
        default="single",
        help="one redis-server (default), a Cluster of 3 primaries + 3 replicas, "
        "or a primary + 2 replicas + 3 sentinels",
    )
    p.set_defaults(run=stack)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
