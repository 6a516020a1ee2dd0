"""Request bodies received whole, under time limits, before anything reads them.

A body must arrive in time: its first bytes within ``api_body_idle_seconds``, no pause longer than that, on
average ``api_body_min_bytes_per_second`` after those first seconds, and all of it within ``api_body_seconds``.
A sender slower than that is cut (408 REQUEST_TIMEOUT). The body is kept in memory up to
``api_body_memory_bytes`` and in a temporary file beyond, so a hundred bodies arriving at once take a hundred
small buffers, not a hundred large ones; it is handed to the application (replayed through ``receive``) only
once it is complete.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

import anyio
import anyio.to_thread

from customs.api.errors import RequestTooLarge

REPLAY_CHUNK = 256 * 1024  # what the application is given at a time from a body kept in a temporary file


@dataclass(frozen=True)
class BodyLimits:
    size: int  # 413 above
    seconds: float
    idle_seconds: float
    min_bytes_per_second: int
    memory_bytes: int

    @classmethod
    def of(cls, settings, size: int) -> BodyLimits:
        return cls(
            size,
            settings.api_body_seconds,
            settings.api_body_idle_seconds,
            settings.api_body_min_bytes_per_second,
            settings.api_body_memory_bytes,
        )


class BodyTooSlow(Exception):
    """The body did not arrive in time (the message says which limit and what did arrive)."""


class ClientGone(Exception):
    """The client closed the connection before its body was complete."""

    def __init__(self, received: int):
        super().__init__(f"the client went away after {received} bytes")
        self.received = received


class ReceivedBody:
    """A request body: in memory up to ``memory_bytes``, in a temporary file beyond."""

    def __init__(self, memory_bytes: int):
        self.size = 0
        self._memory_bytes = memory_bytes
        self._chunks: list[bytes] = []
        self._file: IO[bytes] | None = None

    @property
    def in_file(self) -> bool:
        return self._file is not None

    async def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._file is None and self.size <= self._memory_bytes:
            self._chunks.append(chunk)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="customs-body-")
            chunks, self._chunks = self._chunks, []
            await anyio.to_thread.run_sync(self._file.writelines, chunks)
        await anyio.to_thread.run_sync(self._file.write, chunk)

    def replay(self, receive: Callable) -> Callable:
        """A ``receive`` giving the application this body, then what the connection says (a disconnect)."""
        given = False

        async def replaying() -> dict:
            nonlocal given
            if given:
                return await receive()
            if self._file is None:
                given = True
                chunk, self._chunks = b"".join(self._chunks), []
                return {"type": "http.request", "body": chunk, "more_body": False}
            chunk = await anyio.to_thread.run_sync(self._read_chunk)
            given = self._file.tell() >= self.size
            return {"type": "http.request", "body": chunk, "more_body": not given}

        return replaying

    def _read_chunk(self) -> bytes:
        assert self._file is not None
        return self._file.read(REPLAY_CHUNK)

    def rewind(self) -> None:
        if self._file is not None:
            self._file.seek(0)

    def close(self) -> None:
        self._chunks = []
        if self._file is not None:
            self._file.close()
            self._file = None


async def receive_body(receive: Callable, limits: BodyLimits, counted: Callable[[int], None] | None = None) -> ReceivedBody:
    """The whole body, or BodyTooSlow, RequestTooLarge, ClientGone (or what ``counted``, told of every chunk,
    raises: a client's quota). Whatever was received is let go of when it raises."""
    body = ReceivedBody(limits.memory_bytes)
    started = last = anyio.current_time()
    try:
        while True:
            deadlines = {
                "pause": last + limits.idle_seconds,
                "rate": started + limits.idle_seconds + body.size / limits.min_bytes_per_second,
                "total": started + limits.seconds,
            }
            reason = min(deadlines, key=deadlines.__getitem__)
            with anyio.move_on_after(max(deadlines[reason] - anyio.current_time(), 0)) as waiting:
                message = await receive()
            if waiting.cancelled_caught:
                raise BodyTooSlow(_too_slow(reason, body.size, anyio.current_time() - started, limits))
            if message["type"] == "http.disconnect":
                raise ClientGone(body.size)
            chunk = message.get("body", b"")
            if chunk:
                last = anyio.current_time()
                if body.size + len(chunk) > limits.size:
                    raise RequestTooLarge(limits.size)
                if counted is not None:
                    counted(len(chunk))
                await body.add(chunk)
            if not message.get("more_body", False):
                body.rewind()
                return body
    except BaseException:
        body.close()
        raise


def _too_slow(reason: str, received: int, elapsed: float, limits: BodyLimits) -> str:
    got = f"{received} bytes of the body arrived in {elapsed:.0f} s"
    if reason == "pause":
        return f"{got}, then nothing for {limits.idle_seconds:g} s (api_body_idle_seconds); the connection is closed"
    if reason == "rate":
        return (
            f"{got}: after the first {limits.idle_seconds:g} s a body must come at {limits.min_bytes_per_second} bytes a "
            "second or more (api_body_min_bytes_per_second); the connection is closed"
        )
    return f"{got}; a body must arrive within {limits.seconds:g} s (api_body_seconds); the connection is closed"


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (glibc's, looked up here: musl and macOS have neither)
        return libc
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to give back this way
        return None


_libc = _glibc()
_malloc_trim = _libc.malloc_trim if _libc is not None else None
M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
MALLOC_ARENAS = 2


def few_malloc_arenas() -> bool:
    """At most ``MALLOC_ARENAS`` glibc heaps (as MALLOC_ARENA_MAX=2 would): every thread that decodes a large body
    otherwise gets a heap of its own, which keeps its freed pages. Measured (bench/intake_burst.py, 16 x 54.5 MB):
    a warm process at 245 MiB went to 833 MiB and back to 257 MiB with two arenas; with one per thread it stayed at
    359-413 MiB after each burst, malloc_trim or not. Called once by create_app, before the worker threads exist."""
    if _libc is None or os.environ.get("MALLOC_ARENA_MAX"):  # the operator's own setting wins
        return False
    return bool(_libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS))


def give_memory_back() -> None:
    """After large bodies are decoded and let go of, glibc keeps the freed memory in its arenas (one per thread
    that decoded): the process stayed near 1 GB after a burst. malloc_trim returns it to the system."""
    if _malloc_trim is not None:
        _malloc_trim(0)
