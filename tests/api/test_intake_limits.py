"""Intake under slow, greedy and vanishing clients (issue 25): slow bodies and slow headers are cut with 408
and hold no decoding place; each client's share (at once, per minute, bytes per day) is refused with 429 and
Retry-After; a client that goes away is one log line, not a traceback. Through the ASGI interface, and against
a real uvicorn server (the one `customs serve` builds) over raw sockets where the server's side is what counts."""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import threading

import anyio
import pytest
from sqlmodel import select as select_rows

from customs.api import create_app
from customs.api.quotas import seconds_to_next_day
from customs.core.clock import utcnow
from customs.core.db import transaction
from customs.core.settings import configure
from models.api_client import ApiClientUsage
from tests.api.test_api import asgi_post, b64, bearer, declaration_count
from tests.helpers import as_bytes, free_port, http_scope, sample, unique, wait_until


def submission_body(signer) -> bytes:
    content = as_bytes(unique(sample()))
    return json.dumps({"declaration": b64(content), "signature": b64(signer.sign(content))}).encode()


class Call:
    """One request straight through the ASGI interface, its body given by ``chunks`` (an async iterator of
    bytes, or a disconnect when it yields None); what was answered is kept."""

    def __init__(self, app, token: str, chunks, path: str = "/v1/declarations", headers=()):
        self.app, self.chunks, self.read = app, chunks, 0
        self.scope = http_scope(
            "POST", path, [(b"content-type", b"application/json"), (b"authorization", token.encode()), *headers]
        )
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.answered = anyio.Event()

    async def receive(self) -> dict:
        try:
            chunk, more = await anext(self.chunks)
        except StopAsyncIteration:
            await anyio.sleep_forever()
        if chunk is None:
            return {"type": "http.disconnect"}
        self.read += 1
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], dict(message["headers"])
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                self.answered.set()

    async def run(self) -> None:
        await self.app(self.scope, self.receive, self.send)

    @property
    def error(self) -> dict:
        return json.loads(self.body)["error"]


async def whole(body: bytes):
    yield body, False


async def trickle(body: bytes, every: float = 0.2):
    """One byte at a time, ``every`` seconds apart (the attack probe: 1 byte every 2 s)."""
    for index in range(len(body)):
        yield body[index : index + 1], index < len(body) - 1
        await anyio.sleep(every)


def test_slow_senders_are_cut_and_hold_no_place_while_a_fast_submission_gets_through(settings, company_signer):
    """Issue 25: a declarant token holding 4 submissions that sent 1 byte every 2 s made a portal submission wait
    until they closed (60 s, 171 s): they held the 4 decoding places. Now a body takes a place only once it has
    all arrived: with a single place, the portal's submission is answered while the 4 still trickle; then each
    of them is cut with 408 REQUEST_TIMEOUT (the connection closed), and their client may submit again."""
    configure(
        settings.model_copy(
            update={"api_max_concurrent_submissions": 1, "api_body_idle_seconds": 2.0, "api_body_min_bytes_per_second": 1000}
        )
    )
    app = create_app()
    declarant, portal = bearer()["Authorization"], bearer("portal")["Authorization"]
    slow = [Call(app, declarant, trickle(submission_body(company_signer))) for _ in range(4)]
    fast = Call(app, portal, whole(submission_body(company_signer)))
    slow_when_fast_answered: list = []

    async def main():
        with anyio.fail_after(60):  # before issue 25 the fast one waited for ever: the slow ones were never cut
            async with anyio.create_task_group() as group:
                for call in slow:
                    group.start_soon(call.run)
                await anyio.sleep(0.5)
                assert all(call.read for call in slow)
                group.start_soon(fast.run)
                await fast.answered.wait()
                slow_when_fast_answered.extend(call.status for call in slow)

    anyio.run(main)
    assert fast.status == 202, fast.body
    assert slow_when_fast_answered == [None] * 4  # still sending when the fast one was answered
    for call in slow:
        assert call.status == 408 and call.error["code"] == "REQUEST_TIMEOUT", call.body
        assert "api_body_min_bytes_per_second" in call.error["message"]
        assert call.headers[b"connection"] == b"close"
    assert declaration_count() == 1
    again = Call(app, declarant, whole(submission_body(company_signer)))  # its places were given back
    anyio.run(again.run)
    assert again.status == 202, again.body


@contextlib.contextmanager
def intake_served(settings, **update):
    """The intake API under the uvicorn server `customs serve` builds (customs.cli.serve.intake_server), on a free port."""
    from customs.cli.serve import intake_server

    served = settings.model_copy(update={"api_port": free_port(), **update})
    configure(served)
    server = intake_server(create_app(), served)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the API to listen", 20)
    try:
        yield served.api_port
    finally:
        server.should_exit = True
        thread.join(10)


def answer_while_trickling(port: int, start: bytes, drip: bytes, every: float = 0.3) -> tuple[int, bytes, bytes]:
    """Send ``start``, then ``drip`` a byte at a time until the server answers; read the answer to the end of the
    connection (it must close it). Returns the status, the head and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(start)
        for byte in drip:
            if select.select([sock], [], [], every)[0]:
                break
            sock.sendall(bytes([byte]))
        answer = b""
        while chunk := sock.recv(65536):  # the socket's 30 s time-out: before issue 25 the server never answered
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


def test_slow_headers_are_cut_by_the_server(settings):
    """Issue 25: h11 has no time limit on a request's headers, so a client sending one header byte at a time kept
    its connection for ever. Now the headers must all arrive within api_header_seconds: 408 with the API's JSON
    error, and the connection closed; also for the second request of a kept-alive connection."""
    with intake_served(settings, api_header_seconds=1.0) as port:
        start = b"POST /v1/declarations HTTP/1.1\r\nHost: x\r\n"
        status, head, body = answer_while_trickling(port, start, b"X-Slow: " + b"a" * 200)
        assert status == 408 and b"content-type: application/json" in head.lower()
        error = json.loads(body)["error"]
        assert error["code"] == "REQUEST_TIMEOUT" and "api_header_seconds" in error["message"]

        first = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"  # answered; then the next request's headers trickle
        status, _, body = answer_while_trickling(port, first + b"GET /v1/health HTTP/1.1\r\n", b"X-Slow: " + b"a" * 200)
        assert status == 200  # the first answer; the 408 follows it on the same connection
        assert b"408 Request Timeout" in body and b"REQUEST_TIMEOUT" in body


def test_a_slow_body_is_cut_by_the_server(settings, caplog):
    """The same over a real connection: a body sent a byte at a time is cut with 408, one line in the log."""
    token = bearer()["Authorization"]
    with intake_served(settings, api_body_idle_seconds=1.0, api_body_min_bytes_per_second=1000) as port:
        start = (
            f"POST /v1/declarations HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        ).encode()
        with caplog.at_level(logging.WARNING):
            status, head, body = answer_while_trickling(port, start, b"{" + b" " * 998 + b"}")
    assert status == 408 and b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "REQUEST_TIMEOUT"
    cut = [r for r in caplog.records if "body too slow" in r.getMessage()]
    assert len(cut) == 1 and cut[0].exc_info is None and "client 'declarant-" in cut[0].getMessage()
    assert declaration_count() == 0


def assert_too_many(status: int, headers: dict, error: dict, code: str, setting: str) -> int:
    assert status == 429 and error["code"] == code and setting in error["message"], error
    retry_after = int(headers[b"retry-after"])
    assert retry_after > 0
    return retry_after


def test_too_many_at_once_for_one_client(settings, company_signer):
    """api_client_concurrent_submissions: a client with that many in progress is refused the next at once, its
    body unread; another client is not."""
    configure(settings.model_copy(update={"api_client_concurrent_submissions": 1}))
    app = create_app()
    declarant, portal = bearer()["Authorization"], bearer("portal")["Authorization"]
    let_go = anyio.Event()

    async def held():
        body = submission_body(company_signer)
        yield body[:10], True
        await let_go.wait()
        yield body[10:], False

    first = Call(app, declarant, held())
    second = Call(app, declarant, whole(submission_body(company_signer)))
    other = Call(app, portal, whole(submission_body(company_signer)))

    async def main():
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(first.run)
                await anyio.sleep(0.3)
                await second.run()
                await other.run()
                let_go.set()

    anyio.run(main)
    assert_too_many(second.status, second.headers, second.error, "TOO_MANY_AT_ONCE", "api_client_concurrent_submissions")
    assert second.read == 0
    assert (first.status, other.status) == (202, 202)


def test_too_many_per_minute_for_one_client(settings):
    """api_client_submissions_per_minute: counted whatever became of them (here: bodies refused as invalid)."""
    configure(settings.model_copy(update={"api_client_submissions_per_minute": 2}))
    app = create_app()
    token, other = bearer()["Authorization"].encode(), bearer("portal")["Authorization"].encode()
    answers = [asgi_post(app, "/v1/declarations", [(b"authorization", token)], [b"{}"]) for _ in range(3)]
    assert [status for status, _, _ in answers] == [422, 422, 429]
    status, error, read = answers[2]
    assert error["error"]["code"] == "TOO_MANY_PER_MINUTE" and "api_client_submissions_per_minute" in error["error"]["message"]
    assert read == 0
    assert asgi_post(app, "/v1/declarations", [(b"authorization", other)], [b"{}"])[0] == 422

    call = Call(app, token.decode(), whole(b"{}"))
    anyio.run(call.run)
    assert 0 < assert_too_many(call.status, call.headers, call.error, "TOO_MANY_PER_MINUTE", "per_minute") <= 60


def test_bytes_per_day_for_one_client_kept_in_the_database(settings):
    """api_client_bytes_per_day: every body byte a client sends in submissions counts, in the database (a new
    process, here a new application, still knows); a body whose Content-Length passes what is left is refused
    unread, one without Content-Length when it passes; Retry-After: Kazakhstan midnight."""
    configure(settings.model_copy(update={"api_client_bytes_per_day": 10_000}))
    app = create_app()
    token, other = bearer()["Authorization"], bearer("portal")["Authorization"].encode()
    auth = [(b"authorization", token.encode())]
    assert asgi_post(app, "/v1/declarations", auth, [b"{" + b" " * 5998 + b"}"])[0] == 422  # 6000 bytes, counted

    declared = Call(create_app(), token, whole(b"{" + b" " * 4998 + b"}"), headers=[(b"content-length", b"5000")])
    anyio.run(declared.run)  # a new application: what it knows comes from the database
    retry_after = assert_too_many(
        declared.status, declared.headers, declared.error, "DAILY_BYTES_EXCEEDED", "api_client_bytes_per_day"
    )
    assert declared.read == 0 and "4000 are left" in declared.error["message"]
    assert abs(retry_after - seconds_to_next_day(utcnow())) <= 5

    chunked = [b"{" + b" " * 999] + [b" " * 1000] * 8 + [b"}"]  # no Content-Length: cut when it passes
    status, error, read = asgi_post(app, "/v1/declarations", auth, chunked)
    assert (status, error["error"]["code"], read) == (429, "DAILY_BYTES_EXCEEDED", 5)
    assert asgi_post(app, "/v1/declarations", [(b"authorization", other)], [b"{}"])[0] == 422  # others are not affected
    with transaction() as session:
        usage = {row.client_id: (row.body_bytes, row.requests) for row in session.exec(select_rows(ApiClientUsage))}
    assert sorted(usage.values()) == [(2, 1), (10_000, 2)]  # 6000, then the 4000 received before the cut


def test_a_client_going_away_is_one_log_line(settings, caplog):
    """Issue 25: each client disconnect wrote a ClientDisconnect traceback. Now one line: who, what, how much."""
    app = create_app()
    token = bearer()["Authorization"]

    async def gone():
        yield b'{"declaration": "', True
        yield None, False

    call = Call(app, token, gone())
    with caplog.at_level(logging.INFO):
        anyio.run(call.run)
    assert call.status is None  # nobody to answer
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].exc_info is None, [r.getMessage() for r in lines]
    line = lines[0].getMessage()
    assert "POST /v1/declarations" in line and "client 'declarant-" in line and "after 17 bytes" in line


def test_a_client_going_away_from_the_real_server_leaves_no_traceback(settings, caplog):
    token = bearer()["Authorization"]
    with intake_served(settings) as port, caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"POST /v1/declarations HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{}".encode()
            )
        wait_until(lambda: any("went away" in r.getMessage() for r in caplog.records), "the disconnect to be logged", 10)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in caplog.records if "went away" in r.getMessage()][0].endswith("nothing of it was kept")


@pytest.mark.parametrize("path", ["/v1/declarations", "/v1/documents/verify"])
def test_429_is_documented(path):
    document = create_app().openapi()
    responses = document["paths"][path]["post"]["responses"]
    assert "Retry-After" in responses["429"]["headers"] and "408" in responses
