"""How deeply a JSON document nests, checked before it is decoded (pure).

msgspec's decoder recurses once per array or object level; a small body nested a thousand
deep ends in a ``RecursionError`` inside it. Every JSON the server decodes from a client (HTTP
bodies, WebSocket ops) is checked here first against MAX_JSON_DEPTH.

The check is cheap for ordinary documents: one that opens no more brackets than the limit
cannot nest deeper, and that count is two ``bytes.count`` calls. Only a document that opens
more has its strings removed (a bracket inside a string does not nest) and its depth measured.
"""

from __future__ import annotations

import re
from itertools import accumulate

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def _opens(doc: bytes) -> int:
    return doc.count(b"[") + doc.count(b"{")


def depth(doc: bytes) -> int:
    """The deepest array/object nesting in ``doc`` (0 for a scalar); for invalid JSON, an
    upper bound of what a decoder would reach before it fails."""
    brackets = _STRING.sub(b"", doc).translate(None, _NOT_BRACKET)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def too_deep(doc: bytes | str, limit: int) -> bool:
    """True when ``doc`` nests arrays/objects more than ``limit`` levels deep."""
    raw = doc.encode() if isinstance(doc, str) else doc
    if _opens(raw) <= limit:
        return False
    return depth(raw) > limit
