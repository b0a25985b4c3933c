"""OpenAPI 3.1, generated from the msgspec types named in ``api.routes.OPERATIONS``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from server.api.responses import JSONResponse

if TYPE_CHECKING:
    from server.api.routes import Operation

REF = "#/components/schemas/{name}"


def build(operations: list[Operation], *, extra_schemas: list[Any], description: str) -> dict[str, Any]:
    types = _types(operations) + extra_schemas
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    refs = dict(zip(map(_key, types), schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    components["ServerMessage"] = refs[_key(extra_schemas[0])]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Delineate", "version": "1.0.0", "description": description},
        "paths": paths,
        "components": {"schemas": components},
    }


def _key(t: Any) -> str:
    return repr(t)


def _types(operations: list[Operation]) -> list[Any]:
    seen: dict[str, Any] = {}
    for op in operations:
        for t in [op.request, *op.responses.values()]:
            if t is not None:
                seen.setdefault(_key(t), t)
    return list(seen.values())


def _operation(op: Operation, refs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{op.method.lower()}_{op.path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
        "responses": {str(code): _response(code, t, op, refs) for code, t in op.responses.items()},
    }
    if op.description:
        out["description"] = op.description
    if op.deprecated:
        out["deprecated"] = True
    params = [_param(name, "path", "A job id (uuid4).", required=True) for name in op.path_params]
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


def _param(name: str, where: str, text: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": text, "schema": {"type": "string"}}


def _response(code: int, t: Any, op: Operation, refs: dict[str, Any]) -> dict[str, Any]:
    text = {200: "OK", 202: "Accepted", 302: "Found", 400: "Invalid input", 404: "Unknown job",
            409: "Conflict with the job's state", 415: "Not JSON", 503: "Unhealthy",
            504: "Timed out"}.get(code, "Response")
    if t is None:
        return {"description": text}
    media = op.media_type if code < 300 else "application/json"
    return {"description": text, "content": {media: {"schema": refs[_key(t)]}}}


async def document(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Delineate API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font:13px ui-monospace,monospace;background:#f4f4f4;border-radius:4px}
pre{padding:.6rem;overflow:auto}section{border-top:1px solid #ddd;padding:.5rem 0}
.m{display:inline-block;min-width:4.5rem;font-weight:700}.dep{opacity:.6}
</style></head><body><h1>Delineate API</h1><p id="desc"></p><main id="ops">Loading…</main>
<h2>Schemas</h2><div id="schemas"></div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const esc = s => String(s).replace(/[&<>]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));
  document.getElementById('desc').textContent = doc.info.description;
  const ops = [];
  for (const [path, methods] of Object.entries(doc.paths)) for (const [m, op] of Object.entries(methods)) {
    const params = (op.parameters || []).map(p => `<li><code>${esc(p.name)}</code> (${p.in}) ${esc(p.description)}</li>`).join('');
    const body = op.requestBody ? `<p>Body: <code>${esc(JSON.stringify(op.requestBody.content['application/json'].schema))}</code></p>` : '';
    const res = Object.entries(op.responses).map(([c, r]) => `<li>${c} ${esc(r.description)} ${r.content ? '<code>' + esc(JSON.stringify(Object.values(r.content)[0].schema)) + '</code>' : ''}</li>`).join('');
    ops.push(`<section class="${op.deprecated ? 'dep' : ''}"><h3><span class="m">${m.toUpperCase()}</span><code>${esc(path)}</code></h3><p>${esc(op.summary)}${op.deprecated ? ' (deprecated)' : ''}</p>${op.description ? '<p>' + esc(op.description) + '</p>' : ''}${params ? '<ul>' + params + '</ul>' : ''}${body}<ul>${res}</ul></section>`);
  }
  document.getElementById('ops').innerHTML = ops.join('');
  document.getElementById('schemas').innerHTML = Object.entries(doc.components.schemas).map(([n, s]) => `<section><h3 id="${esc(n)}">${esc(n)}</h3><pre>${esc(JSON.stringify(s, null, 2))}</pre></section>`).join('');
});
</script></body></html>
"""


async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_HTML)
