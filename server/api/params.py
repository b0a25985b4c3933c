"""Reading what a route needs from the request: the replica's services and path ids."""

from __future__ import annotations

import re

from starlette.requests import HTTPConnection

from server.errors import BadRequest
from server.frames import UUID_PATTERN
from server.services import Services

_JOB_ID = re.compile(UUID_PATTERN)


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


def job_id_param(conn: HTTPConnection) -> str:
    """The path's job id, lowercased; 400 (or close 1008) unless it is a uuid."""
    value = str(conn.path_params["job_id"]).lower()
    if not _JOB_ID.match(value):
        raise BadRequest(f"malformed job id {value[:64]!r}: expected a uuid")
    return value
