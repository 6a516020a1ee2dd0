"""The gate every request passes before a byte of its body is read: who sends it, and how much it may send.

A pure ASGI middleware (FastAPI reads a route's body before it runs the route's dependencies, so a
dependency cannot authenticate first):

1. Authentication. Every /v1 route but /v1/health and the QR check /v1/documents/check needs a client token
   (/v1/ops/alerts the operations alert token instead, see customs.api.routers.ops): a request without one, or
   with an unknown or revoked one, gets 401 at once, its body never read. The client found is handed to the route
   (``current_client`` takes it from the request's state).
2. Size, per route. Submissions may carry ``api_max_request_bytes`` (documents and attachments), a document to
   verify ``api_max_verify_bytes``; an official's decision, a cancellation, a release mark or a print request is
   a few hundred bytes and may carry ``api_max_action_bytes``; so does anything else. 413 when Content-Length says
   more, and a body without Content-Length (chunked) is counted as it streams in and cut off at the limit.
3. Submissions (and verifications) at once: at most ``api_max_concurrent_submissions`` are read and decoded at a time in this
   process; the others wait before a byte of their body is read (uvicorn stops reading their sockets), so
   eight 60 MB submissions no longer take eight times the memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import anyio
import anyio.to_thread

from customs.api.errors import BAD_TOKEN, DATABASE_RETRY_AFTER, NO_TOKEN, RequestTooLarge, database_unavailable_body
from customs.core.db import database_unavailable
from customs.core.settings import get_settings
from customs.services.clients import authenticate
from customs.services.ops_alerts import token_matches

# /v1/documents/check: the paper copy's QR code, scanned by anyone (a bank, a border post) with a phone; a GET with no
# body, answering only whether a declaration of that number and SHA-256 is held and its status (customs.services.documents)
PUBLIC_PATHS = frozenset({"/v1/health", "/v1/health/ready", "/v1/documents/check"})
OPS_PATHS = frozenset({"/v1/ops/alerts"})  # the automations' calls: the operations alert token, not a client's
SUBMISSIONS = re.compile(r"^/v1/declarations/?$")
VERIFICATIONS = re.compile(r"^/v1/documents/verify/?$")  # a document and its signature: up to api_max_verify_bytes


def _bearer_token(headers) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return (token.strip() or None) if scheme.lower() == "bearer" else None
    return None


class RequestGate:
    """Authentication first (see the module), then 413 when Content-Length says the body is too large for
    the route; otherwise counts the body as it streams in.

    ``limit`` of ``None``: the settings in force at each request (per route, as the module says).
    """

    def __init__(self, app: Callable, limit: int | None = None):
        self.app = app
        self.limit = limit
        self._submissions: anyio.Semaphore | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.startswith("/v1/") and path not in PUBLIC_PATHS and scope.get("method") != "OPTIONS":
            token = _bearer_token(scope.get("headers", ()))
            if token is None:
                await self._refuse(
                    send,
                    401,
                    "UNAUTHENTICATED",
                    NO_TOKEN,
                    "Authorization",
                    (b"www-authenticate", b"Bearer"),
                )
                return
            try:
                if path in OPS_PATHS:
                    client = "ops" if await anyio.to_thread.run_sync(token_matches, token) else None
                else:
                    client = await anyio.to_thread.run_sync(authenticate, token)
            except Exception as exc:
                if (error := database_unavailable(exc)) is None:
                    raise
                body = database_unavailable_body(error)["error"]
                retry_after = (b"retry-after", str(DATABASE_RETRY_AFTER).encode())
                await self._refuse(send, 503, body["code"], body["message"], "$", retry_after)
                return
            if client is None:
                await self._refuse(
                    send,
                    401,
                    "UNAUTHENTICATED",
                    BAD_TOKEN,
                    "Authorization",
                    (b"www-authenticate", b'Bearer error="invalid_token"'),
                )
                return
            if client == "ops":
                scope.setdefault("state", {})["ops_caller"] = True
            else:
                scope.setdefault("state", {})["client"] = client
        settings = get_settings()
        submission = bool(SUBMISSIONS.match(path)) and scope.get("method") == "POST"
        verification = bool(VERIFICATIONS.match(path)) and scope.get("method") == "POST"
        if self.limit:
            limit = self.limit
        elif submission:
            limit = settings.api_max_request_bytes
        elif verification:
            limit = settings.api_max_verify_bytes
        else:
            limit = min(settings.api_max_action_bytes, settings.api_max_request_bytes)
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(send, 400, "BAD_REQUEST", "the Content-Length header is not a number")
                    return
        if declared is not None and declared > limit:
            await self._refuse(send, 413, "TOO_LARGE", f"the request body has {declared} bytes; at most {limit} are accepted")
            return

        received = 0
        started = False

        async def counting_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge(limit)
            return message

        async def watching_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            if submission or verification:  # large bodies read and decoded: a few at a time
                if self._submissions is None:
                    self._submissions = anyio.Semaphore(settings.api_max_concurrent_submissions)
                async with self._submissions:
                    await self.app(scope, counting_receive, watching_send)
            else:
                await self.app(scope, counting_receive, watching_send)
        except RequestTooLarge as exc:  # only when nothing inside turned it into a response
            if started:
                raise
            await self._refuse(send, 413, "TOO_LARGE", exc.detail)

    @staticmethod
    async def _refuse(send: Callable, status: int, code: str, message: str, path: str = "$", *extra: tuple) -> None:
        body = json.dumps({"error": {"code": code, "path": path, "message": message}}, ensure_ascii=False).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
