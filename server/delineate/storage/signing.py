"""HMAC-signed, expiring download links for the local store (pure; no I/O)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from delineate.errors import Forbidden


def signature(secret: str, path: str, expires: int) -> str:
    mac = hmac.new(secret.encode(), f"{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(secret: str, path: str, expires: str, sig: str, now: float) -> None:
    """Raise Forbidden unless ``sig`` signs (path, expires) and ``expires`` is in the future."""
    if not expires.isdigit() or len(expires) > 12:
        raise Forbidden("the download link is malformed")
    if not hmac.compare_digest(signature(secret, path, int(expires)), sig):
        raise Forbidden("the download link's signature does not match")
    if int(expires) < now:
        raise Forbidden("the download link has expired; ask for a new one")
