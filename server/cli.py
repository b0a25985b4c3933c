"""``delineate``: the server's command line (``delineate serve``)."""

from __future__ import annotations

import argparse
import logging
import sys

from server.settings import Settings, SettingsError


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"delineate: {exc}", file=sys.stderr)
        return 2
    host = args.host or settings.host
    port = args.port or settings.port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        loop="auto",
        http="auto",
        ws="websockets-sansio",
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws_max_size=settings.max_ws_message_bytes,
        timeout_graceful_shutdown=10,
        lifespan="on",
        access_log=False,
        proxy_headers=False,
    )
    uvicorn.Server(config).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="delineate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="run one server process (settings from the environment)")
    p.add_argument("--host", default=None, help="bind address (default: HOST or 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="port (default: PORT or 3000)")
    p.set_defaults(run=serve)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
