"""HTTP/1.1 for the intake API: uvicorn's h11 protocol with a time limit on the request line and headers.

uvicorn limits how long an idle keep-alive connection stays open (``timeout_keep_alive``) but not how long a
request's headers may take: a client sending a header byte every few seconds held its connection for ever, and
enough of them fill ``limit_concurrency``. Here a connection whose request headers have not all arrived
``api_header_seconds`` after it opened, or after its previous answer was sent, gets 408 with the API's JSON error
body and is closed. The headers' size is h11's limit (``h11_max_incomplete_event_size``: 400 above it).
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_BYTES = 16 * 1024  # request line and headers together (bearer tokens are 43 characters)


def request_timeout_response(seconds: float) -> bytes:
    body = json.dumps(
        {
            "error": {
                "code": "REQUEST_TIMEOUT",
                "path": "$",
                "message": f"the request line and headers did not all arrive within {seconds:g} s "
                "(api_header_seconds); the connection is closed",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def intake_protocol(header_seconds: float) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``."""

    class IntakeH11Protocol(H11Protocol):
        headers_due: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._wait_for_headers()

        def data_received(self, data: bytes) -> None:
            if self.headers_due is None and self.conn.their_state is h11.IDLE:
                self._wait_for_headers()  # the next request of a kept-alive connection begins
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # its request line and headers are in (or it failed)
                self._headers_in()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._wait_for_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_in()
            super().connection_lost(exc)

        def _wait_for_headers(self) -> None:
            self._headers_in()
            self.headers_due = self.loop.call_later(header_seconds, self._headers_late)

        def _headers_in(self) -> None:
            if self.headers_due is not None:
                self.headers_due.cancel()
                self.headers_due = None

        def _headers_late(self) -> None:
            self.headers_due = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            self.logger.warning(
                "%s: the request headers did not arrive within %g s; 408 and closed",
                f"{self.client[0]}:{self.client[1]}" if self.client else "a client",
                header_seconds,
            )
            self.transport.write(request_timeout_response(header_seconds))
            self.transport.close()

    return IntakeH11Protocol
