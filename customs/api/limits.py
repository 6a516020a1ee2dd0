"""The gate every request passes before a byte of its body is read: who sends it, how much, how fast, how often.

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
3. The client's share (submissions and verifications, customs.api.quotas): in progress at once, started per
   minute, bytes per day; 429 with Retry-After, before the body is read whenever the headers already tell.
4. Time (customs.api.bodies): the body is received whole, in memory or a temporary file, and must arrive in
   time (408 REQUEST_TIMEOUT and the connection closed otherwise). The headers' own time limit is uvicorn's
   side: customs.api.http11.
5. Decoding, a few at a time: at most ``api_max_concurrent_submissions`` submissions (and verifications) are read
   and decoded at once in this process, each once its body has all arrived, so a slow sender holds no place
   (issue 25: four senders of 1 byte every 2 s held all four and stopped intake for everyone) and eight 60 MB
   submissions do not take eight times the memory (issue 15). After large ones, glibc is asked to give the freed
   memory back.

A client that goes away before its body is complete is one line in the log (who, what, how many bytes), not a
traceback.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable

import anyio
import anyio.to_thread
from starlette.requests import ClientDisconnect

from customs.api.bodies import BodyLimits, BodyTooSlow, ClientGone, ReceivedBody, give_memory_back, receive_body
from customs.api.errors import BAD_TOKEN, DATABASE_RETRY_AFTER, NO_TOKEN, RequestTooLarge, database_unavailable_body
from customs.api.quotas import ClientQuotas, OverQuota
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
log = logging.getLogger("customs.api")
TRIM_AFTER_SECONDS = 1.0


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value)
    return None


def _who(scope: dict) -> str:
    """The request in a log line: method, path, the client's name (or the token's absence) and its address."""
    client = scope.get("state", {}).get("client")
    name = f"client {client.name!r}" if client is not None else "no client"
    peer = scope.get("client") or ("?", 0)
    return f"{scope.get('method')} {scope.get('path')} ({name}, {peer[0]}:{peer[1]})"


def _bearer_token(headers) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return (token.strip() or None) if scheme.lower() == "bearer" else None
    return None


class RequestGate:
    """Authentication, size, the client's share, time, decoding: see the module.

    ``limit`` of ``None``: the settings in force at each request (per route, as the module says).
    """

    def __init__(self, app: Callable, limit: int | None = None):
        self.app = app
        self.limit = limit
        self.quotas = ClientQuotas()
        self._decoding: anyio.Semaphore | None = None
        self._decoding_now = 0
        self._trim: threading.Timer | None = None
        self._trim_due = False  # a body larger than api_body_memory_bytes was decoded since glibc last gave memory back

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not await self._authenticated(scope, send):
            return
        settings = get_settings()
        path, method = scope.get("path", ""), scope.get("method")
        large = method == "POST" and bool(SUBMISSIONS.match(path) or VERIFICATIONS.match(path))
        limit = self.limit or self._limit_for(path, method, settings)
        try:
            declared = _content_length(scope)
        except ValueError:
            await self._refuse(send, 400, "BAD_REQUEST", "the Content-Length header is not a number")
            return
        if declared is not None and declared > limit:
            await self._refuse(send, 413, "TOO_LARGE", f"the request body has {declared} bytes; at most {limit} are accepted")
            return
        if method in ("GET", "HEAD", "OPTIONS", "DELETE") and not declared:
            await self._run(scope, receive, send)  # no body to wait for
            return
        client = scope.get("state", {}).get("client")
        granted = None
        if large and client is not None:
            try:
                granted = await self.quotas.admit(client, declared, settings)
            except OverQuota as over:
                await self._refuse(send, 429, over.code, over.message, "$", (b"retry-after", str(over.retry_after).encode()))
                return
        try:
            body = await self._receive(scope, receive, send, BodyLimits.of(settings, limit), granted)
        finally:
            if granted is not None:
                await self._count(granted)
        if body is None:
            return
        try:
            if large:
                self._trim_due = self._trim_due or body.in_file
                await self._decode(scope, body.replay(receive), send, settings)
            else:
                await self._run(scope, body.replay(receive), send)
        finally:
            body.close()

    async def _receive(self, scope: dict, receive: Callable, send: Callable, limits: BodyLimits, granted) -> ReceivedBody | None:
        """The whole body, or None when the request was answered (413, 408, 429) or its client went away."""
        try:
            return await receive_body(receive, limits, granted.counted if granted is not None else None)
        except RequestTooLarge as exc:
            await self._refuse(send, 413, "TOO_LARGE", exc.detail)
        except OverQuota as over:
            await self._refuse(send, 429, over.code, over.message, "$", (b"retry-after", str(over.retry_after).encode()))
        except BodyTooSlow as slow:
            log.warning("%s: body too slow, cut (408): %s", _who(scope), slow)
            await self._refuse(send, 408, "REQUEST_TIMEOUT", str(slow))
        except ClientGone as gone:
            log.warning("%s: the client went away after %d bytes of its body; nothing of it was kept", _who(scope), gone.received)
        return None

    async def _decode(self, scope: dict, receive: Callable, send: Callable, settings) -> None:
        """The application on a complete body, at most api_max_concurrent_submissions at a time."""
        if self._decoding is None:
            self._decoding = anyio.Semaphore(settings.api_max_concurrent_submissions)
        async with self._decoding:
            self._decoding_now += 1
            try:
                await self._run(scope, receive, send)
            finally:
                self._decoding_now -= 1
                if not self._decoding_now and self._trim_due:  # the last large body let go of: give its memory back
                    self._trim_due = False
                    self._give_memory_back_soon()

    def _give_memory_back_soon(self) -> None:
        """malloc_trim a moment after the last large body was decoded: at once, the request's objects (the body's
        bytes among them) are still held by what answered it, and the memory stayed with the process."""
        if self._trim is not None:
            self._trim.cancel()
        self._trim = threading.Timer(TRIM_AFTER_SECONDS, give_memory_back)
        self._trim.daemon = True
        self._trim.start()

    async def _run(self, scope: dict, receive: Callable, send: Callable) -> None:
        started = False

        async def watching_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except ClientDisconnect:  # e.g. the answer could not be sent: nothing to answer, nothing to trace
            log.warning("%s: the client went away before its answer", _who(scope))
        except RequestTooLarge as exc:  # only when nothing inside turned it into a response
            if started:
                raise
            await self._refuse(send, 413, "TOO_LARGE", exc.detail)

    async def _count(self, granted) -> None:
        try:
            await granted.close()
        except Exception as exc:
            if (error := database_unavailable(exc)) is None:
                raise
            log.warning("client %r: its %d body bytes could not be counted: %s", granted.client.name, granted.received, error)

    @staticmethod
    def _limit_for(path: str, method: str | None, settings) -> int:
        if method == "POST" and SUBMISSIONS.match(path):
            return settings.api_max_request_bytes
        if method == "POST" and VERIFICATIONS.match(path):
            return settings.api_max_verify_bytes
        return min(settings.api_max_action_bytes, settings.api_max_request_bytes)

    async def _authenticated(self, scope: dict, send: Callable) -> bool:
        """True when the request may go on (a public path, or a known client's token); answered 401 or 503 otherwise."""
        path = scope.get("path", "")
        if not path.startswith("/v1/") or path in PUBLIC_PATHS or scope.get("method") == "OPTIONS":
            return True
        token = _bearer_token(scope.get("headers", ()))
        if token is None:
            await self._refuse(send, 401, "UNAUTHENTICATED", NO_TOKEN, "Authorization", (b"www-authenticate", b"Bearer"))
            return False
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
            return False
        if client is None:
            www = (b"www-authenticate", b'Bearer error="invalid_token"')
            await self._refuse(send, 401, "UNAUTHENTICATED", BAD_TOKEN, "Authorization", www)
            return False
        if client == "ops":
            scope.setdefault("state", {})["ops_caller"] = True
        else:
            scope.setdefault("state", {})["client"] = client
        return True

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
