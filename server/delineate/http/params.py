"""Reading what a route needs from the request: the replica's services and path ids."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from starlette.requests import HTTPConnection

from delineate.errors import BadRequest
from delineate_protocol.frames import UUID_PATTERN

if TYPE_CHECKING:  # the services import every route; the routes import this
    from delineate.services import Services

_JOB_ID = re.compile(UUID_PATTERN)


def web_dir() -> Path:
    """The browser pages' files: packaged beside the server, or ``web/`` in a checkout."""
    packaged = Path(__file__).resolve().parents[1] / "web"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "web"


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


def job_id_param(conn: HTTPConnection) -> str:
    """The path's job id, lowercased; 400 (or close 1008) unless it is a uuid."""
    value = str(conn.path_params["job_id"]).lower()
    if not _JOB_ID.match(value):
        raise BadRequest(f"malformed job id {value[:64]!r}: expected a uuid")
    return value


def public_base(conn: HTTPConnection) -> str:
    """Where clients reach the service, without a trailing slash: PUBLIC_BASE_URL when set,
    else what the request says (its scheme and Host header)."""
    configured = services_of(conn).settings.public_base_url
    return configured or str(conn.base_url).rstrip("/")


def absolute_url(conn: HTTPConnection, url: str) -> str:
    """``url`` (root-relative, or already absolute) as an absolute link."""
    return urljoin(public_base(conn) + "/", url.lstrip("/"))
