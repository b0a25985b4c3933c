"""OpenAPI 3.1, generated from the msgspec types named in ``api.routes.OPERATIONS``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from delineate.http.responses import JSONResponse
from delineate_protocol.frames import POSITION_PATTERN, UUID_PATTERN
from delineate_protocol.schemas import IDEMPOTENCY_KEY_PATTERN, ErrorResponse

if TYPE_CHECKING:
    from delineate.api.routes import Operation

REF = "#/components/schemas/{name}"


def build(
    operations: list[Operation], *, extra_schemas: list[Any], description: str
) -> dict[str, Any]:
    types = _types(operations) + extra_schemas
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    refs = dict(zip(map(_key, types), schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    links = _job_links(operations)
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs, links)
    components["ServerMessage"] = refs[_key(extra_schemas[0])]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Delineate", "version": "1.0.0", "description": description},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


SECURITY_SCHEMES = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key or HS256 JWT."},
    "streamToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "From POST /v1/stream-token; WebSocket and SSE routes only.",
    },
}
SECURED_PREFIX = "/v1/"
"""Routes that need a credential when auth is on (API_KEYS / JWT_SECRET); the rest are open."""


def _key(t: Any) -> str:
    return repr(t)


def _types(operations: list[Operation]) -> list[Any]:
    seen: dict[str, Any] = {}
    for op in operations:
        for t in [op.request, *op.responses.values()]:
            if t is not None:
                seen.setdefault(_key(t), t)
    return list(seen.values())


def _operation(op: Operation, refs: dict[str, Any], links: dict[str, Any]) -> dict[str, Any]:
    responses = dict(op.responses)
    error = ErrorResponse
    # Every route is rate limited; /v1/ routes refuse unknown callers when auth is on.
    responses.setdefault(429, error)
    if op.request is not None:  # a body that is not JSON, not the right JSON, or too big
        responses.setdefault(400, error)
        responses.setdefault(413, error)
        responses.setdefault(415, error)
    if op.path.startswith(SECURED_PREFIX):
        responses.setdefault(401, error)
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": _operation_id(op),
        "responses": {
            str(code): _response(code, t, op, refs, links) for code, t in responses.items()
        },
    }
    if op.path.startswith(SECURED_PREFIX):
        schemes = ["apiKey", "bearer"] + (["streamToken"] if op.streaming else [])
        # {} = no credential: auth is optional (off in the embedded default).
        out["security"] = [{name: []} for name in schemes] + [{}]
    if op.description:
        out["description"] = op.description
    if op.deprecated:
        out["deprecated"] = True
    params = [_param(name, "path", PATH_TEXT[name], required=True) for name in op.path_params]
    params += [_param(name, "query", text) for name, text in op.query.items()]
    params += [_param(name, "header", text) for name, text in op.headers.items()]
    if params:
        out["parameters"] = params
    if op.request is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[_key(op.request)]}},
        }
    return out


def _operation_id(op: Operation) -> str:
    words = "".join(c if c.isalnum() else "_" for c in op.path).strip("_")
    return f"{op.method.lower()}_{words or 'root'}"


POSITION = {"type": "string", "pattern": POSITION_PATTERN}
PATH_TEXT = {"job_id": "A job id (uuid4).", "trace_id": "A trace id (32 hex digits)."}
PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "job_id": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN},
    "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    "since": POSITION,
    "Last-Event-ID": POSITION,
    "Idempotency-Key": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
}
"""What each parameter accepts, exactly as the handlers check it (anything else is a 400)."""


def _param(name: str, where: str, text: str, *, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": text,
        "schema": PARAM_SCHEMAS.get(name, {"type": "string"}),
    }


def _job_links(operations: list[Operation]) -> dict[str, Any]:
    """OpenAPI links: the job id a 202 returns is what every job route takes (clients and
    schemathesis' stateful phase follow them)."""
    return {
        _operation_id(op): {
            "operationId": _operation_id(op),
            "parameters": {"job_id": "$response.body#/jobId"},
        }
        for op in operations
        if op.path_params == ("job_id",)
    }


def _response(
    code: int, t: Any, op: Operation, refs: dict[str, Any], links: dict[str, Any]
) -> dict[str, Any]:
    text = {
        200: "OK",
        202: "Accepted",
        302: "Found",
        400: "Invalid input",
        401: "Auth is on and the credential is missing or wrong",
        404: "Unknown job",
        409: "Conflict with the job's state",
        413: "The body is larger than MAX_BODY_BYTES",
        415: "Not JSON",
        422: "The files add up to more than MAX_BUNDLE_BYTES",
        429: "Too many requests (Retry-After says when to try again)",
        503: "Unhealthy",
        504: "Timed out",
    }.get(code, "Response")
    if t is None:
        return {"description": text}
    media = op.media_type if code < 300 else "application/json"
    response = {"description": text, "content": {media: {"schema": refs[_key(t)]}}}
    if code == 202:
        response["links"] = links
    return response


async def document(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


DOCS_HTML = (Path(__file__).parent / "docs.html").read_text()


async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_HTML)
