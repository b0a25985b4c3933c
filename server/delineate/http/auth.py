"""Who is calling: API keys, HS256 JWTs and short-lived stream tokens (auth is optional).

Auth is on when API_KEYS or JWT_SECRET is set. Every ``/v1/`` route then needs a credential,
except signed download links (``/v1/files/``), which carry their own signature:

- ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``: acts as the key's owner;
- ``Authorization: Bearer <jwt>``: an HS256 token signed with JWT_SECRET; ``sub`` is the
  owner, ``exp`` is required, ``aud``/``iss`` are checked when configured;
- ``?token=<stream token>`` on the real-time routes only: browsers cannot set headers on
  WebSocket or EventSource, so ``POST /v1/stream-token`` (or the initiate response) hands out
  a token that is good for streaming, for a few minutes, and nothing else. It is a JWT signed
  with a key derived from URL_SIGNING_SECRET (so every replica accepts it) with its own
  audience, so neither kind of token passes for the other.

Each job records its owner; anyone else is told the job does not exist (``JobService``).
Without auth, the unguessable job id is the only capability.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable

import jwt
import msgspec
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from delineate.errors import Unauthorized
from delineate.http.edge import send_error
from delineate.settings import Settings

STREAM_AUDIENCE = "delineate:stream"
STREAM_PATHS = ("/v1/ws", "/v1/download/subscribe/", "/v1/download/stream/")
"""Routes that accept a stream token in the query string."""
OPEN_PREFIXES = ("/v1/files/",)
"""Signed download links: the signature is the credential."""
CHALLENGE = (b"www-authenticate", b'Bearer realm="delineate"')


class Principal(msgspec.Struct, frozen=True):
    owner: str
    via: str
    """api_key, jwt or stream_token."""
    operator: bool = False
    """May use the operations dashboard (OPERATORS, or a JWT's `roles`; never a stream token)."""


class StreamToken(msgspec.Struct, frozen=True, rename="camel"):
    token: str
    expires_at: float
    expires_in: int


def _subject(claims: dict[str, object], kind: str) -> str:
    """The owner a token names: its ``sub``, which must be a non-blank string (an empty one
    would make every such token one anonymous owner)."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise Unauthorized(f"invalid {kind}: sub must be a non-empty string")
    return sub


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth_enabled
        # Keys are looked up by digest, so comparing them takes no time that depends on how
        # much of a guess was right.
        self._owners = {
            _digest(key.strip()): owner.strip()
            for owner, key in (pair.split(":", 1) for pair in settings.api_key_pairs)
        }
        self._operators = settings.operator_list
        self._jwt_secret = settings.jwt_secret
        self._audience = settings.jwt_audience or None
        self._issuer = settings.jwt_issuer or None
        self._stream_key = hmac.new(
            settings.url_signing_secret.encode(), b"delineate stream token v1", "sha256"
        ).digest()
        self.stream_ttl_s = settings.stream_token_ttl_s

    # --- checking ------------------------------------------------------------------------

    def authenticate(self, scope: Scope) -> Principal | None:
        """The caller, or None when auth is off; raises ``Unauthorized``."""
        if not self.enabled:
            return None
        headers = Headers(scope=scope)
        key = headers.get("x-api-key")
        if key is not None:
            return self._by_key(key)
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            return self._by_bearer(credential.strip())
        token = QueryParams(scope.get("query_string", b"")).get("token")
        if token is not None and scope["path"].startswith(STREAM_PATHS):
            return self.verify_stream_token(token)
        raise Unauthorized("authentication required: send X-API-Key or Authorization: Bearer")

    def _by_key(self, key: str) -> Principal:
        owner = self._owners.get(_digest(key))
        if owner is None:
            raise Unauthorized("unknown API key")
        return Principal(owner=owner, via="api_key", operator=owner in self._operators)

    def _by_bearer(self, credential: str) -> Principal:
        if self._jwt_secret and credential.count(".") == 2:
            try:
                claims = jwt.decode(
                    credential,
                    self._jwt_secret,
                    algorithms=["HS256"],
                    audience=self._audience,
                    issuer=self._issuer,
                    options={"require": ["sub", "exp"]},
                )
            except jwt.PyJWTError as exc:
                raise Unauthorized(f"invalid token: {exc}") from exc
            owner, roles = _subject(claims, "token"), claims.get("roles")
            operator = owner in self._operators or (isinstance(roles, list) and "operator" in roles)
            return Principal(owner=owner, via="jwt", operator=operator)
        return self._by_key(credential)

    def verify_stream_token(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._stream_key,
                algorithms=["HS256"],
                audience=STREAM_AUDIENCE,
                options={"require": ["sub", "exp"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid stream token: {exc}") from exc
        return Principal(owner=_subject(claims, "stream token"), via="stream_token")

    # --- issuing -------------------------------------------------------------------------

    def issue_stream_token(self, owner: str, now: float | None = None) -> StreamToken:
        now = time.time() if now is None else now
        expires_at = int(now) + self.stream_ttl_s
        claims = {"sub": owner, "aud": STREAM_AUDIENCE, "iat": int(now), "exp": expires_at}
        token = jwt.encode(claims, self._stream_key, algorithm="HS256")
        return StreamToken(token=token, expires_at=expires_at, expires_in=self.stream_ttl_s)


def principal_of(scope: Scope) -> Principal | None:
    """The caller ``Authenticate`` admitted (None when auth is off)."""
    principal: Principal | None = scope.get("state", {}).get("principal")
    return principal


class Authenticate:
    """Admit ``/v1/`` requests and WebSocket handshakes only with a valid credential.

    A refusal is a 401 with the usual error body, for WebSockets too (as the handshake's
    HTTP response), so no socket is ever opened for an unknown caller."""

    def __init__(self, app: ASGIApp, *, authenticator: Authenticator) -> None:
        self.app, self.authenticator = app, authenticator

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function: a synchronous check, then the inner app's awaitable handed on,
        # so no frame of this middleware stays suspended for a socket's life (thousands of
        # sockets each hold every async middleware's frame while they are open).
        path = scope.get("path", "")
        if (
            not self.authenticator.enabled
            or scope["type"] not in ("http", "websocket")
            or not path.startswith("/v1/")
            or path.startswith(OPEN_PREFIXES)
            or scope.get("method") == "OPTIONS"
        ):
            return self.app(scope, receive, send)
        try:
            scope["state"]["principal"] = self.authenticator.authenticate(scope)
        except Unauthorized as exc:
            return self._refuse(scope, receive, send, exc)
        return self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: Unauthorized) -> None:
        request_id = scope["state"].get("request_id", "")
        if scope["type"] == "http":
            await send_error(send, 401, exc.message, request_id, [CHALLENGE])
            return
        await receive()  # websocket.connect
        # The ASGI "denial response" extension: the handshake is answered with plain HTTP.
        await send_error(_as_denial(send), 401, exc.message, request_id, [CHALLENGE])


def _as_denial(send: Send) -> Send:
    async def send_denial(message: dict[str, object]) -> None:
        await send({**message, "type": f"websocket.{message['type']}"})

    return send_denial  # type: ignore[return-value]
