"""Serves the local store's objects behind signed, expiring links (embedded mode only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from server.api.params import services_of
from server.errors import NotFound
from server.storage.local import LocalStorage


async def download(request: Request) -> Response:
    storage = services_of(request).storage
    if not isinstance(storage, LocalStorage):
        raise NotFound("download links are served by the object store")
    key = request.path_params["key"]
    params = request.query_params
    path = storage.verify(key, params.get("expires", ""), params.get("signature", ""))
    filename = key.rpartition("/")[2]
    disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if path.is_file():
        return FileResponse(path, media_type="application/zip", headers=disposition)
    info = await storage.head(key)
    if info is None:
        raise NotFound(f"no object at {key}")
    headers = {**disposition, "Content-Length": str(info.size)}
    return StreamingResponse(storage.read(key), media_type="application/zip", headers=headers)
