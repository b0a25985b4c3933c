"""Serves the local store's objects behind signed, expiring links (embedded mode only)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from delineate.errors import NotFound
from delineate.http.params import services_of
from delineate.storage.local import LocalStorage

# ``?name=`` is not signed: it only renames the saved file, so it may hold nothing but safe
# characters (the browser page passes a friendly name; Content-Disposition beats ``download``).
FRIENDLY_NAME = re.compile(r"[A-Za-z0-9._-]{1,120}\.zip")


async def download(request: Request) -> Response:
    storage = services_of(request).storage
    if not isinstance(storage, LocalStorage):
        raise NotFound("download links are served by the object store")
    key = request.path_params["key"]
    params = request.query_params
    path = storage.verify(key, params.get("expires", ""), params.get("signature", ""))
    name = params.get("name", "")
    filename = name if FRIENDLY_NAME.fullmatch(name) else key.rpartition("/")[2]
    disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if path.is_file():
        return FileResponse(path, media_type="application/zip", headers=disposition)
    info = await storage.head(key)
    if info is None:
        raise NotFound(f"no object at {key}")
    headers = {**disposition, "Content-Length": str(info.size)}
    return StreamingResponse(storage.read(key), media_type="application/zip", headers=headers)
