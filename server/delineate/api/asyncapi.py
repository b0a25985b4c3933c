"""AsyncAPI 3.0 for the real-time channels (the two WebSockets and the event stream),
generated from the same msgspec types as the OpenAPI document.

``python -m delineate.api.asyncapi > docs/asyncapi.json`` writes the copy kept in the repository;
a test checks that it is current and valid against the AsyncAPI 3.0.0 JSON Schema.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from delineate.http.responses import JSONResponse
from delineate_protocol.frames import AckMessage, AnyFrame, AnyOp, ErrorMessage, PongMessage

REF = "#/components/schemas/{name}"
JOB_ID = "A job id (a lowercase uuid4)."
SINCE = (
    "The last position the client has (`<epoch>:<seq>`, or a bare `<seq>` for the job's "
    "current epoch); without it the socket starts with a snapshot."
)


def build() -> dict[str, Any]:
    types = [AnyFrame, AnyOp, AckMessage, PongMessage, ErrorMessage]
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    frame, op, ack, pong, error = (_asyncapi_schema(schema) for schema in schemas)
    messages = {
        "Frame": _message("A job frame", frame, "A frame of a job: its position is epoch + seq."),
        "Op": _message("A client op", op, "subscribe / unsubscribe / ping on `/v1/ws`."),
        "Ack": _message("An ack", ack, "The answer to a subscribe or unsubscribe."),
        "Pong": _message("A pong", pong, "The answer to a ping."),
        "Error": _message("An error", error, "A refused op; the socket stays open."),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Delineate real-time API",
            "version": "1.0.0",
            "description": (
                "Progress of download jobs, pushed. Every frame carries its position (`epoch`, "
                "`seq`); resume with `since` or `Last-Event-ID` and get every later frame once, "
                "or a `snapshot` with `recovered: false` when the history no longer reaches."
            ),
        },
        "servers": {
            "local": {"host": "127.0.0.1:3000", "protocol": "ws", "description": "`make run`"}
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {
            "schemas": {name: _asyncapi_schema(schema) for name, schema in components.items()},
            "messages": messages,
        },
    }


def _message(title: str, payload: dict[str, Any], summary: str) -> dict[str, Any]:
    return {
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "payload": payload,
    }


def _channels() -> dict[str, Any]:
    job_id = {"jobId": {"description": JOB_ID}}
    frames = {"frame": {"$ref": "#/components/messages/Frame"}}
    return {
        "jobSocket": {
            "address": "/v1/download/subscribe/{jobId}",
            "title": "One job over WebSocket",
            "description": (
                f"`?since=` ({SINCE}). A snapshot or the frames after `since`, every frame, then "
                "close 1000 after the terminal frame."
            ),
            "parameters": job_id,
            "messages": {**frames, "error": {"$ref": "#/components/messages/Error"}},
        },
        "multiplexedSocket": {
            "address": "/v1/ws",
            "title": "Many jobs over one WebSocket",
            "messages": {
                **frames,
                "op": {"$ref": "#/components/messages/Op"},
                "ack": {"$ref": "#/components/messages/Ack"},
                "pong": {"$ref": "#/components/messages/Pong"},
                "error": {"$ref": "#/components/messages/Error"},
            },
        },
        "eventStream": {
            "address": "/v1/download/stream/{jobId}",
            "title": "One job over Server-Sent Events",
            "description": (
                "`text/event-stream`: `id:` is the frame's `<epoch>:<seq>`, `event:` its type, "
                f"`data:` the frame. `Last-Event-ID` or `?since=` ({SINCE}). Ends after the "
                "terminal frame; `: keepalive` comments keep an idle stream open."
            ),
            "parameters": job_id,
            "messages": frames,
        },
    }


def _operations() -> dict[str, Any]:
    def op(action: str, channel: str, *names: str) -> dict[str, Any]:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in names],
        }

    return {
        "sendJobFrames": op("send", "jobSocket", "frame", "error"),
        "receiveOps": op("receive", "multiplexedSocket", "op"),
        "sendJobsFrames": op("send", "multiplexedSocket", "frame", "ack", "pong", "error"),
        "sendEvents": op("send", "eventStream", "frame"),
    }


def _asyncapi_schema(node: Any) -> Any:
    """msgspec writes OpenAPI's discriminator object; an AsyncAPI schema names only the
    property."""
    if isinstance(node, list):
        return [_asyncapi_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _asyncapi_schema(value) for key, value in node.items()}
    if isinstance(out.get("discriminator"), dict):
        out["discriminator"] = out["discriminator"]["propertyName"]
    return out


async def document(request: Request) -> Response:
    return JSONResponse(request.app.state.asyncapi)


if __name__ == "__main__":
    print(json.dumps(build(), indent=2))
