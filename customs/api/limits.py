"""Request size: a pure ASGI middleware, before authentication and before any body is read."""

from __future__ import annotations

import json
from collections.abc import Callable

from customs.api.errors import RequestTooLarge
from customs.core.settings import get_settings


class BodySizeLimit:
    """413 when Content-Length says the body is too large; otherwise counts the body as it streams in.

    ``limit`` of ``None``: ``api_max_request_bytes`` of the settings in force at each request.
    """

    def __init__(self, app: Callable, limit: int | None = None):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit or get_settings().api_max_request_bytes
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
            await self.app(scope, counting_receive, watching_send)
        except RequestTooLarge as exc:  # only when nothing inside turned it into a response
            if started:
                raise
            await self._refuse(send, 413, "TOO_LARGE", exc.detail)

    @staticmethod
    async def _refuse(send: Callable, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": {"code": code, "path": "$", "message": message}}, ensure_ascii=False).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
