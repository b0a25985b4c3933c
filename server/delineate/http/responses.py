"""JSON in and out: msgspec responses, body decoding, and the error -> response mapping."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from delineate import jsondepth
from delineate.errors import BadRequest, BodyTooLarge, DelineateError, UnsupportedMediaType
from delineate.settings import Settings
from delineate_protocol.frames import JobStatus, encoder
from delineate_protocol.schemas import ErrorResponse

T = TypeVar("T")
log = logging.getLogger("delineate.http")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return encoder.encode(content)


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def error_body(
    status: int, message: str, request_id: str, *, job_status: JobStatus | None = None
) -> bytes:
    from http import HTTPStatus

    return encoder.encode(
        ErrorResponse(
            error=HTTPStatus(status).phrase,
            message=message,
            request_id=request_id,
            status=job_status,
        )
    )


def error_response(exc: DelineateError, request_id: str) -> Response:
    body = error_body(
        exc.status, exc.message, request_id, job_status=getattr(exc, "job_status", None)
    )
    return Response(
        body, status_code=exc.status, headers=exc.headers, media_type="application/json"
    )


def _number(literal: str) -> int | float:
    """JSON has one number type: 70000.0 and 7e4 are the integer 70000 (as in JSON Schema and
    in the original service), 70000.5 stays a float and fails an integer field."""
    value = float(literal)
    return int(value) if value.is_integer() else value


_json_decoder = msgspec.json.Decoder(float_hook=_number)


async def read_body(request: Request, type_: type[T], settings: Settings) -> T:
    """Decode and validate a JSON body: 415 for another media type, 413 over MAX_BODY_BYTES
    (read no further), 400 for bad JSON, JSON nested deeper than MAX_JSON_DEPTH, or a bad
    shape."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType("the request body must be JSON (Content-Type: application/json)")
    body = await _body_within(request, settings.max_body_bytes)
    if jsondepth.too_deep(body, settings.max_json_depth):
        raise BadRequest(f"the request body nests deeper than {settings.max_json_depth} levels")
    try:
        return msgspec.convert(_json_decoder.decode(body), type_)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc


async def _body_within(request: Request, limit: int) -> bytes:
    """The body, read as it arrives and given up on once it passes ``limit`` bytes. (The
    server refuses such a body itself, before the app sees it; this holds under any other.)"""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(f"the request body is larger than {limit} bytes")
    except ClientDisconnect as exc:
        # The client went away, or the server refused the body: no one reads this answer.
        raise BadRequest("the request body did not arrive") from exc
    return bytes(body)


async def handle_delineate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DelineateError)
    return error_response(exc, request_id_of(request))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such endpoint", 405: "method not allowed on this endpoint"}.get(
        exc.status_code, str(exc.detail)
    )
    body = error_body(exc.status_code, message, request_id_of(request))
    return Response(body, exc.status_code, headers=exc.headers, media_type="application/json")


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    body = error_body(500, "an unexpected error occurred", request_id_of(request))
    return Response(body, 500, media_type="application/json")
