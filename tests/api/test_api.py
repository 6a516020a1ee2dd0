"""The intake HTTP API in-process (FastAPI's TestClient over httpx), on a fresh SQLite database per test:
submissions (multipart and JSON), who may see and do what, authentication, size limits, error shapes,
officials' acts, print requests, the hooks, the clients CLI, and a schemathesis run of the OpenAPI document."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import warnings

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlmodel import select

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2 for its TestClient; httpx is what this project has
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient
from customs.api import create_app
from customs.core.db import transaction
from customs.core.settings import configure
from customs.services.clients import authenticate, create_client, list_clients, revoke_client
from models.audit import AuditEvent, verify_chain
from models.declaration import Attachment, Declaration, Status
from models.identifiers import with_check_digit
from tests.helpers import (
    DECLARANT_BIN,
    INSPECTOR,
    OTHER_OFFICE,
    OTHER_ZONE,
    SAMPLES,
    SUPERVISOR,
    as_bytes,
    events,
    http_scope,
    run_steps,
    sample,
    stored,
    unique,
)

OTHER_BIN = with_check_digit("99044000123")  # a valid BIN that is not the samples' declarant

SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", create_app())  # the document needs no database
SCHEMA.config.generation.update(max_examples=15, deterministic=True)


class Hooks:
    def __init__(self):
        self.started: list[str] = []
        self.decisions: list[str] = []

    def start_clearance(self, application_id: str) -> None:
        self.started.append(application_id)

    def decision_given(self, application_id: str) -> None:
        self.decisions.append(application_id)


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture
def app(settings, hooks):
    return create_app(start_clearance=hooks.start_clearance, decision_given=hooks.decision_given)


_ACTS = re.compile(r"^/v1/declarations/.+/(decision|print-requests|release-cancellation|release-mark)$")


def documented_operation(method: str, path: str) -> str | None:
    """The OpenAPI path template a concrete request path belongs to (registration numbers contain slashes)."""
    if path in ("/v1/health", "/v1/declarations", "/v1/print-queue"):
        return path
    if method == "POST" and (match := _ACTS.match(path)):
        return f"/v1/declarations/{{key}}/{match.group(1)}"
    if method == "GET" and path.startswith("/v1/declarations/"):
        return "/v1/declarations/{key}"
    return None


def check_against_document(response) -> None:
    """Every response the tests see has a status the document lists, and a body of the schema it gives."""
    response.read()
    method = response.request.method
    template = documented_operation(method, response.request.url.path)
    if template is None:
        return
    assert str(response.status_code) in SCHEMA.raw_schema["paths"][template][method.lower()]["responses"], (
        f"{method} {template} answered {response.status_code}, which its OpenAPI document does not list"
    )
    SCHEMA[template][method].validate_response(response)


def api_client(app) -> TestClient:
    client = TestClient(app)
    client.event_hooks = {"response": [check_against_document]}
    return client


@pytest.fixture
def http(app):
    with api_client(app) as client:
        yield client


def bearer(kind: str = "declarant", ids=(DECLARANT_BIN,), official: str | None = None, name: str | None = None) -> dict[str, str]:
    name = name or f"{kind}-{official or '-'.join(ids) or 'any'}"
    _, token = create_client(name, kind, ids if kind == "declarant" else (), official)
    return {"Authorization": f"Bearer {token}"}


def multipart(content: bytes, signature: bytes | None, attachments=()) -> list:
    files = [("declaration", ("declaration.json", content, "application/json"))]
    if signature is not None:
        files.append(("signature", ("declaration.json.p7s", signature, "application/pkcs7-signature")))
    for name, data, sig in attachments:
        files.append(("attachments", (name, data, "text/plain")))
        files.append(("attachment_signatures", (f"{name}.p7s", sig, "application/pkcs7-signature")))
    return files


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def declaration_count() -> int:
    with transaction() as session:
        return len(session.exec(select(Declaration.id)).all())


def assert_error(response, status: int, code: str, path: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "path", "message"}, body
    assert body["error"]["code"] == code, body
    if path is not None:
        assert body["error"]["path"] == path, body
    assert body["error"]["message"]
    return body["error"]


# --- Submissions ----------------------------------------------------------------------------------


def test_multipart_submission_by_a_declarant_then_the_same_bytes_again(http, hooks, company_signer):
    headers = bearer()
    content = as_bytes(unique(sample()))
    invoice = (
        SAMPLES / "attachments" / "invoice-INV-2026-1187.txt"
    ).read_bytes() + b"\r\n--not-a-boundary\r\n\x00\xff binary tail\r"
    files = multipart(content, company_signer.sign(content), [("invoice.txt", invoice, company_signer.sign(invoice))])

    first = http.post("/v1/declarations", files=files, headers=headers)
    assert first.status_code == 202, first.text
    body = first.json()
    assert set(body) == {"application_id", "submitted_at", "status", "status_url"}
    assert body["status"] == "submitted"
    assert first.headers["location"] == body["status_url"] == f"/v1/declarations/{body['application_id']}"
    assert hooks.started == [body["application_id"]]

    declaration = stored(body["application_id"])
    assert declaration.content == content and declaration.channel == "electronic"  # the exact bytes
    with transaction() as session:
        attachment = session.exec(select(Attachment).where(Attachment.declaration_id == declaration.id)).one()
    assert attachment.filename == "invoice.txt" and attachment.content == invoice

    again = http.post("/v1/declarations", files=files, headers=headers)
    assert again.status_code == 200 and again.json()["application_id"] == body["application_id"]
    assert "location" not in again.headers and hooks.started == [body["application_id"]]  # no second clearance

    status = http.get(body["status_url"], headers=headers)
    assert status.status_code == 200 and status.json()["application_id"] == body["application_id"]
    assert status.json()["history"][0]["actor"] == "api:declarant-050840001233"  # which client submitted, in the audit chain

    run_steps(body["application_id"])  # signatures (incl. the attachment's) check out: registered and released
    number = stored(body["application_id"]).registration_number
    by_number = http.get(f"/v1/declarations/{number}", headers=headers)  # registration numbers contain slashes
    assert by_number.status_code == 200, by_number.text
    assert by_number.json()["registration_number"] == number and by_number.json()["status"] == "released"


def test_json_submission_by_a_declarant(http, hooks, company_signer):
    headers = bearer()
    content = as_bytes(unique(sample()))
    attachment = b"contract text"
    envelope = {
        "declaration": b64(content),
        "signature": b64(company_signer.sign(content)),
        "attachments": [
            {"filename": "contract.txt", "content": b64(attachment), "signature": b64(company_signer.sign(attachment))}
        ],
    }

    first = http.post("/v1/declarations", json=envelope, headers=headers)
    assert first.status_code == 202, first.text
    application_id = first.json()["application_id"]
    assert first.headers["location"] == f"/v1/declarations/{application_id}"
    assert stored(application_id).content == content
    assert http.post("/v1/declarations", json=envelope, headers=headers).status_code == 200
    assert http.get(first.headers["location"], headers=headers).json()["status"] == "submitted"
    assert hooks.started == [application_id]


def test_a_declarant_may_not_submit_for_another_declarant(http, company_signer):
    headers = bearer(ids=(OTHER_BIN,))
    content = as_bytes(unique(sample()))
    response = http.post("/v1/declarations", files=multipart(content, company_signer.sign(content)), headers=headers)
    assert_error(response, 403, "DECLARANT_NOT_YOURS", "$.declarant")
    assert declaration_count() == 0


def test_a_declarant_reads_only_its_own_declarations_the_portal_all(http, company_signer):
    mine, theirs, portal = bearer(), bearer(ids=(OTHER_BIN,)), bearer("portal")
    content = as_bytes(unique(sample()))
    url = http.post("/v1/declarations", files=multipart(content, company_signer.sign(content)), headers=mine).headers["location"]

    assert http.get(url, headers=mine).status_code == 200
    assert_error(http.get(url, headers=theirs), 403, "NOT_YOURS")
    assert http.get(url, headers=portal).status_code == 200
    assert_error(http.get("/v1/declarations/A000000-UNKNOWN", headers=mine), 404, "DECLARATION_NOT_FOUND")


def test_portal_submission(http, company_signer):
    headers = bearer("portal")
    content = as_bytes(unique(sample()))
    response = http.post(
        "/v1/declarations", json={"declaration": b64(content), "signature": b64(company_signer.sign(content))}, headers=headers
    )
    assert response.status_code == 202, response.text
    assert stored(response.json()["application_id"]).channel == "portal"


def test_signature_required_for_declarant_and_portal_clients(http):
    content = as_bytes(unique(sample()))
    for headers in (bearer(), bearer("portal")):
        assert_error(
            http.post("/v1/declarations", files=multipart(content, None), headers=headers), 400, "SIGNATURE_MISSING", "signature"
        )
    assert_error(
        http.post(
            "/v1/declarations",
            json={
                "declaration": b64(content),
                "signature": b64(b"sig"),
                "attachments": [{"filename": "a.txt", "content": b64(b"a")}],
            },
            headers=bearer("portal", name="p2"),
        ),
        400,
        "SIGNATURE_MISSING",
        "attachments[0].signature",
    )
    assert declaration_count() == 0


def test_bad_bodies_get_errors_in_the_api_shape(http, company_signer):
    headers = {**bearer(), "Content-Type": "application/json"}
    assert_error(http.post("/v1/declarations", content=b'{"declaration": "e30=", ', headers=headers), 422, "REQUEST_INVALID", "$")
    assert_error(
        http.post("/v1/declarations", json={"declaration": "not base64!", "signature": "c2ln"}, headers=headers),
        422,
        "REQUEST_INVALID",
        "$.declaration",
    )
    assert_error(
        http.post("/v1/declarations", json={"declaration": "e30=", "extra": 1}, headers=headers),
        422,
        "REQUEST_INVALID",
        "$.extra",
    )
    # the envelope is fine, the declaration inside is not JSON: intake's own code
    assert_error(
        http.post("/v1/declarations", json={"declaration": b64(b"{oops"), "signature": b64(b"sig")}, headers=headers),
        400,
        "JSON_INVALID",
    )
    assert_error(
        http.post("/v1/declarations", content=b"declaration", headers={**headers, "Content-Type": "text/plain"}),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    evil = {**headers, "Content-Type": "application/evil+json"}  # issue 15: was taken as JSON
    assert_error(http.post("/v1/declarations", content=b"{}", headers=evil), 415, "UNSUPPORTED_MEDIA_TYPE")
    deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # issue 15: was HTTP 500
    error = assert_error(
        http.post("/v1/declarations", json={"declaration": b64(deep), "signature": b64(b"sig")}, headers=headers),
        400,
        "TOO_DEEP",
    )
    assert "32" in error["message"]
    form = {"Content-Type": "multipart/form-data; boundary=xyz", "Authorization": headers["Authorization"]}
    assert_error(
        http.post(
            "/v1/declarations", content=b'--xyz\r\nContent-Disposition: form-data; name="declaration"\r\n\r\n{}', headers=form
        ),
        422,
        "REQUEST_INVALID",
    )
    content = as_bytes(unique(sample()))
    unknown = multipart(content, company_signer.sign(content)) + [("comment", ("c.txt", b"hi", "text/plain"))]
    assert_error(
        http.post("/v1/declarations", files=unknown, headers={"Authorization": headers["Authorization"]}),
        422,
        "REQUEST_INVALID",
        "comment",
    )
    # a FastAPI-validated body: malformed JSON, a wrong value
    official = bearer("official", official=INSPECTOR)
    assert_error(
        http.post("/v1/declarations/X/decision", content=b"{", headers={**official, "Content-Type": "application/json"}),
        422,
        "REQUEST_INVALID",
    )
    assert_error(
        http.post("/v1/declarations/X/decision", json={"act": "e30=", "signature": 5}, headers=official),
        422,
        "REQUEST_INVALID",
        "$.signature",
    )
    assert_error(http.get("/v1/nothing-here", headers=official), 404, "NOT_FOUND")
    assert_error(http.get("/v1/nothing-here"), 401, "UNAUTHENTICATED")  # who asks comes first, even before the route
    assert declaration_count() == 0


def test_a_lone_surrogate_or_a_nul_in_the_declaration_is_a_400_not_a_500(http):
    """Found by `make fuzz`: `"schema": "\\ud800"` (valid JSON escaping no character) raised UnicodeEncodeError while
    the declaration was stored: HTTP 500. A NUL did the same on PostgreSQL. Both are intake refusals now."""
    headers = bearer("portal")
    content = as_bytes(unique(sample()))
    for escaped, path in (("\\ud800", "$.schema"), ("50101\\u0000", "$.customs_office")):
        value = path.removeprefix("$.")
        broken = content.replace(f'"{value}": "'.encode(), f'"{value}": "{escaped}'.encode(), 1)
        response = http.post("/v1/declarations", json={"declaration": b64(broken), "signature": b64(b"sig")}, headers=headers)
        assert_error(response, 400, "CHARACTER_NOT_ALLOWED", path)
    assert declaration_count() == 0


# --- Authentication and size ------------------------------------------------------------------------


def test_missing_bad_and_revoked_tokens_get_401(http):
    assert http.get("/v1/health").json() == {"status": "ok"}  # no authentication
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        error = assert_error(http.get("/v1/declarations/A1", headers=headers), 401, "UNAUTHENTICATED")
        assert error["path"] == "Authorization"
        assert http.get("/v1/declarations/A1", headers=headers).headers["www-authenticate"].startswith("Bearer")
    headers = bearer(name="soon-revoked")
    assert_error(http.get("/v1/declarations/A1", headers=headers), 404, "DECLARATION_NOT_FOUND")
    revoke_client("soon-revoked")
    response = http.post("/v1/declarations", json={"declaration": "e30="}, headers=headers)
    assert_error(response, 401, "UNAUTHENTICATED")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_oversized_bodies_get_413_json(settings, app, company_signer):
    configure(settings.model_copy(update={"api_max_request_bytes": 4096, "max_declaration_bytes": 1000}))
    headers = bearer()
    big = b"x" * 5000
    with api_client(app) as http:
        assert_error(
            http.post("/v1/declarations", content=big, headers={**headers, "Content-Type": "application/json"}), 413, "TOO_LARGE"
        )

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(5):
                yield b"x" * 1000

        assert_error(
            http.post("/v1/declarations", content=chunks(), headers={**headers, "Content-Type": "application/json"}),
            413,
            "TOO_LARGE",
        )
        official = bearer("official", official=INSPECTOR)
        streamed = (part for part in (b'{"decision": "release", "grounds_text": "', b"y" * 5000, b'"}'))
        assert_error(
            http.post("/v1/declarations/X/decision", content=streamed, headers={**official, "Content-Type": "application/json"}),
            413,
            "TOO_LARGE",
        )
        # under the request limit, over the declaration limit: intake's TOO_LARGE, at the declaration
        content = as_bytes(unique(sample()))
        assert len(content) > 1000
        error = assert_error(
            http.post("/v1/declarations", json={"declaration": b64(content[:2000]), "signature": b64(b"s")}, headers=headers),
            413,
            "TOO_LARGE",
        )
        assert "1000" in error["message"]
    assert declaration_count() == 0


def test_a_slow_sender_holds_no_decoding_place(settings, app, company_signer):
    """Issue 15 bounded decoding to api_max_concurrent_submissions at once; issue 25 found that the place was taken
    before the body was read, so slow senders held every place and intake stopped. With one place, a first
    submission still sending its second half does not stop a second one: it is received, decoded and answered;
    then the first is served too."""
    import anyio

    configure(settings.model_copy(update={"api_max_concurrent_submissions": 1}))
    token = bearer()["Authorization"].encode()
    contents = [as_bytes(unique(sample())) for _ in range(2)]
    bodies = [json.dumps({"declaration": b64(c), "signature": b64(company_signer.sign(c))}).encode() for c in contents]
    reads = [0, 0]
    statuses: list[int | None] = [None, None]
    first_may_finish = None
    seen_when_answered: list = []

    def scope() -> dict:
        return http_scope("POST", "/v1/declarations", [(b"content-type", b"application/json"), (b"authorization", token)])

    def call(index: int):
        halves = [bodies[index][: len(bodies[index]) // 2], bodies[index][len(bodies[index]) // 2 :]]

        async def receive():
            if reads[index] == 1 and index == 0:
                await first_may_finish.wait()  # the first submission is slow to send its second half
            if reads[index] < 2:
                reads[index] += 1
                return {"type": "http.request", "body": halves[reads[index] - 1], "more_body": reads[index] < 2}
            await anyio.sleep_forever()

        async def send(message):
            if message["type"] == "http.response.start":
                statuses[index] = message["status"]
                if index == 1:
                    seen_when_answered.extend([list(reads), list(statuses)])
                    first_may_finish.set()

        return app(scope(), receive, send)

    async def main():
        nonlocal first_may_finish
        first_may_finish = anyio.Event()
        with anyio.fail_after(30):  # before issue 25 the second waited for the first for ever
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: call(0))
                await anyio.sleep(0.2)
                group.start_soon(lambda: call(1))

    anyio.run(main)
    assert seen_when_answered == [[1, 2], [None, 202]]  # the second answered while the first was still sending
    assert statuses == [202, 202] and reads == [2, 2] and declaration_count() == 2


def test_a_part_over_its_limit_is_refused_before_it_is_read(settings, app, company_signer):
    """A multipart declaration over max_declaration_bytes stays in Starlette's temporary file: refused by its
    size, never read into memory; a JSON one is refused by its base64 length, before it is decoded."""
    import tracemalloc

    configure(settings.model_copy(update={"max_declaration_bytes": 1000}))
    headers = bearer()
    big = b"{" + b" " * (8 * 1024 * 1024) + b"}"
    boundary = b"customs-boundary"
    body = b"".join(
        [
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="declaration"; filename="d.json"\r\n\r\n' + big,
            b"\r\n--" + boundary + b'\r\nContent-Disposition: form-data; name="signature"; filename="d.p7s"\r\n\r\n0\x00',
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    del body
    tracemalloc.start()
    try:  # only what the server allocates: the chunks were made before
        status, answer, _ = asgi_post(
            app,
            "/v1/declarations",
            [(b"authorization", headers["Authorization"].encode())],
            chunks,
            b"multipart/form-data; boundary=" + boundary,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (status, answer["error"]["code"], answer["error"]["path"]) == (413, "TOO_LARGE", "declaration")
    assert "the part 'declaration' has 8388610 bytes" in answer["error"]["message"]
    assert peak < 4 * 1024 * 1024, peak  # reading the 8 MB part would take 8 MB (and intake's copy more)
    with api_client(app) as http:
        error = assert_error(
            http.post("/v1/declarations", json={"declaration": b64(big[:3000]), "signature": b64(b"s")}, headers=headers),
            413,
            "TOO_LARGE",
            "$.declaration",
        )
        assert "once decoded" in error["message"]
    assert declaration_count() == 0


ACTIONS = [
    "/v1/declarations",
    "/v1/declarations/A261129-X/decision",
    "/v1/declarations/A261129-X/release-cancellation",
    "/v1/declarations/A261129-X/release-mark",
    "/v1/declarations/A261129-X/print-requests",
]


def asgi_post(app, path: str, headers: list[tuple[bytes, bytes]], body_chunks: list[bytes], content_type=b"application/json"):
    """POST straight through the ASGI interface; returns (status, JSON body, how many body chunks were read)."""
    import json

    import anyio

    read = 0
    sent: list[dict] = []

    async def receive():
        nonlocal read
        if read < len(body_chunks):
            read += 1
            return {"type": "http.request", "body": body_chunks[read - 1], "more_body": read < len(body_chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = http_scope("POST", path, [(b"content-type", content_type), *headers])
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), read


@pytest.mark.parametrize("path", ACTIONS)
@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_no_body_is_read_before_the_client_is_authenticated(app, path, token):
    """Issue 15: a 60 MB `[{},{},...]` with no token took the server from 385 MB to 1.8 GB. Now 401 comes
    before a single byte of the body is read, for every route that takes a body."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    chunks = [b"[" + b"{}," * 10_000] * 50 + [b"{}]"]  # 1.5 MB that must never be read
    status, body, read = asgi_post(app, path, headers, chunks)
    assert (status, body["error"]["code"], body["error"]["path"], read) == (401, "UNAUTHENTICATED", "Authorization", 0)


@pytest.mark.parametrize("path", ACTIONS[1:])
def test_an_official_action_takes_a_small_body_only(settings, app, path):
    """A decision is a few hundred bytes: above api_max_action_bytes it is refused, by Content-Length before
    reading, or, sent in chunks without one, as soon as the count passes the limit."""
    configure(settings.model_copy(update={"api_max_action_bytes": 2048}))
    token = bearer("official", official=INSPECTOR)["Authorization"].encode()
    big = [b'{"grounds_text": "' + b"y" * 1000] * 10 + [b'"}']
    declared = [(b"authorization", token), (b"content-length", str(sum(map(len, big))).encode())]
    status, body, read = asgi_post(app, path, declared, big)
    assert (status, body["error"]["code"], read) == (413, "TOO_LARGE", 0)
    status, body, read = asgi_post(app, path, [(b"authorization", token)], big)  # chunked: counted as it streams
    assert (status, body["error"]["code"]) == (413, "TOO_LARGE") and read == 3  # cut off at the third kilobyte
    # a submission keeps the large limit of api_max_request_bytes
    submission = [b"x" * 1000] * 5
    status, body, _ = asgi_post(app, ACTIONS[0], [(b"authorization", bearer()["Authorization"].encode())], submission)
    assert status != 413, body


# --- Officials ------------------------------------------------------------------------------------------


def paper_act(officials, content: bytes, official_id: str = INSPECTOR, **signing):
    from customs.services.intake import paper_act_subject

    return officials.act("enter_paper_declaration", official_id, subject=paper_act_subject(content), **signing)


@pytest.mark.parametrize("family", ["rsa", "gost2004"])
def test_paper_entry_by_an_official(http, company_signer, person_signer, officials, family):
    """Issue 23: the official client's token and the act signed with that official's own NCA key, both: as files of
    the form, or base64 in JSON. Another official's or a declarant's key, or no act: refused (403); an act of another
    official than the client's (400); audited, nothing stored."""
    headers = bearer("official", official=INSPECTOR)
    content = as_bytes(unique(sample()))
    act = paper_act(officials, content, family=family)
    files = multipart(content, None) + [
        ("act", ("act.json", act.document, "application/json")),
        ("act_signature", ("act.p7s", act.signature, "application/pkcs7-signature")),
    ]
    response = http.post("/v1/declarations", files=files, headers=headers)
    assert response.status_code == 202, response.text
    declaration = stored(response.json()["application_id"])
    assert declaration.channel == "paper" and declaration.entered_by == INSPECTOR
    (submitted,) = [e for e in events(declaration.application_id) if e.to_status == "submitted"]
    assert submitted.actor == INSPECTOR and submitted.details["signed_act"]["algorithm"].startswith(
        "GOST" if family != "rsa" else "RSA"
    )
    other = as_bytes(unique(sample()))
    signed = paper_act(officials, other, family=family)
    as_json = {"declaration": b64(other), "act": b64(signed.document), "act_signature": b64(signed.signature)}
    entered = http.post("/v1/declarations", json=as_json, headers=headers)
    assert entered.status_code == 202, entered.text
    assert stored(entered.json()["application_id"]).entered_by == INSPECTOR

    refused = as_bytes(unique(sample()))
    for signer in (officials.signer(SUPERVISOR, family), company_signer, person_signer):
        act = paper_act(officials, refused, signed_by=signer)
        body = {"declaration": b64(refused), "act": b64(act.document), "act_signature": b64(act.signature)}
        assert_error(http.post("/v1/declarations", json=body, headers=headers), 403, "SIGNER_NOT_OFFICIAL")
    act = paper_act(officials, refused)  # the inspector's act, sent by the supervisor's client
    body = {"declaration": b64(refused), "act": b64(act.document), "act_signature": b64(act.signature)}
    assert_error(http.post("/v1/declarations", json=body, headers=bearer("official", official=SUPERVISOR)), 400, "ACT_MISMATCH")
    assert_error(http.post("/v1/declarations", json={"declaration": b64(refused)}, headers=headers), 403, "SIGNATURE_MISSING")
    assert_error(
        http.post("/v1/declarations", json={"declaration": b64(refused), "act": b64(act.document)}, headers=headers),
        400,
        "ACT_MALFORMED",
    )
    assert_error(
        http.post("/v1/declarations", json=body | {"act_signature": "not base64!"}, headers=headers), 400, "ACT_MALFORMED"
    )
    audited = [e for e in events(f"paper:{hashlib.sha256(refused).hexdigest()[:34]}") if e.event == "official_action_refused"]
    assert [e.reasons[0]["code"] for e in audited] == ["SIGNER_NOT_OFFICIAL"] * 3 + ["ACT_MISMATCH", "SIGNATURE_MISSING"]
    with transaction() as session:
        assert (
            session.exec(select(Declaration).where(Declaration.content_sha256 == hashlib.sha256(refused).hexdigest())).all() == []
        )
    signed = as_bytes(unique(sample()))
    assert_error(
        http.post("/v1/declarations", files=multipart(signed, company_signer.sign(signed)), headers=headers), 400, "PAPER_SIGNED"
    )
    other_office = as_bytes(unique(sample()))
    act = paper_act(officials, other_office, OTHER_OFFICE)
    body = {"declaration": b64(other_office), "act": b64(act.document), "act_signature": b64(act.signature)}
    assert_error(
        http.post("/v1/declarations", json=body, headers=bearer("official", official=OTHER_OFFICE)), 403, "OFFICE_MISMATCH"
    )
    # a declarant's client sends no official's act
    assert_error(
        http.post("/v1/declarations", json=body | {"signature": b64(company_signer.sign(other_office))}, headers=bearer()),
        400,
        "OFFICIAL_NOT_EXPECTED",
    )


def signed_act(http, headers, signer, act: str, declaration: str, **fields) -> dict:
    """As an officials' page does it: the service drafts the act, NCALayer signs its bytes, both go back in base64."""
    draft = http.post("/v1/official-acts/draft", json={"act": act, "declaration": declaration, **fields}, headers=headers)
    assert draft.status_code == 200, draft.text
    document = base64.b64decode(draft.json()["document"])
    assert hashlib.sha256(document).hexdigest() == draft.json()["sha256"]
    return {"act": draft.json()["document"], "signature": base64.b64encode(signer.sign(document)).decode()}


@pytest.mark.parametrize("family", ["rsa", "gost2004"])
def test_a_decision_through_the_api(http, hooks, company_signer, officials, family):
    declarant = bearer()
    content = as_bytes(unique(sample("03-unpaid-vat.json")))
    application_id = http.post(
        "/v1/declarations", files=multipart(content, company_signer.sign(content)), headers=declarant
    ).json()["application_id"]
    assert run_steps(application_id).status == Status.AWAITING_OFFICIAL
    url = f"/v1/declarations/{application_id}"
    inspector, other_zone, other_office = (bearer("official", official=o) for o in (INSPECTOR, OTHER_ZONE, OTHER_OFFICE))
    key = officials.signer(INSPECTOR, family)

    def decision(headers, signer=key, **choice):
        return signed_act(http, headers, signer, "decide", application_id, choice=choice or {"decision": "release"})

    assert_error(http.post(f"{url}/decision", json=decision(inspector), headers=declarant), 403, "NOT_AN_OFFICIAL")
    assert_error(
        http.post(f"{url}/decision", json=decision(other_zone, officials.signer(OTHER_ZONE, family)), headers=other_zone),
        403,
        "ZONE_MISMATCH",
    )
    # the token is the inspector's, the act is the inspector's, but the key is the declarant company's or another official's
    for forged in (company_signer, officials.signer(SUPERVISOR, family)):
        assert_error(
            http.post(f"{url}/decision", json=decision(inspector, forged), headers=inspector), 403, "SIGNER_NOT_OFFICIAL"
        )
    # the inspector's act given with another official's token
    assert_error(http.post(f"{url}/decision", json=decision(inspector), headers=other_zone), 400, "ACT_MISMATCH")
    assert_error(
        http.post(f"{url}/decision", json={"act": "not base64!", "signature": "AA=="}, headers=inspector), 400, "ACT_MALFORMED"
    )
    assert_error(http.get(url, headers=other_office), 403, "OFFICE_MISMATCH")
    assert http.get(url, headers=inspector).json()["status"] == "awaiting_official"
    assert_error(
        http.post(f"{url}/decision", json=decision(inspector, decision="refuse"), headers=inspector), 400, "GROUNDS_MISSING"
    )
    assert hooks.decisions == []
    assert stored(application_id).status == Status.AWAITING_OFFICIAL

    signed = decision(inspector, decision="release", decision_code="11")
    decided = http.post(f"{url}/decision", json=signed, headers=inspector)
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert body["status"] == "released" and body["application_id"] == application_id
    assert hooks.decisions == [application_id]
    declaration = stored(application_id)
    assert (
        declaration.decided_by == INSPECTOR
        and declaration.decision_ref == body["decision_id"]
        and declaration.decision_code == "11"
    )
    assert http.post(f"{url}/decision", json=signed, headers=inspector).json()["decision_id"] == body["decision_id"]  # replay
    assert_error(http.post(f"{url}/decision", json=decision(inspector), headers=inspector), 409, "ALREADY_DECIDED")
    with transaction() as session:
        refused = session.exec(select(AuditEvent).where(AuditEvent.event == "official_action_refused")).all()
        assert {r.reasons[0]["code"] for r in refused} == {
            "ZONE_MISMATCH",
            "SIGNER_NOT_OFFICIAL",
            "ACT_MISMATCH",
            "GROUNDS_MISSING",
            "ALREADY_DECIDED",
        }  # audited
        assert verify_chain(session).intact


def test_release_mark_cancellation_print_request_and_queue(http, company_signer, officials):
    declarant, portal, inspector = bearer(), bearer("portal"), bearer("official", official=INSPECTOR)
    content = as_bytes(unique(sample()))
    application_id = http.post(
        "/v1/declarations", files=multipart(content, company_signer.sign(content)), headers=declarant
    ).json()["application_id"]
    url = f"/v1/declarations/{application_id}"
    assert_error(http.post(f"{url}/print-requests", json={}, headers=declarant), 409, "NOT_REGISTERED")
    assert run_steps(application_id).status == Status.RELEASED

    asked = http.post(f"{url}/print-requests", headers=declarant)  # no body at all
    assert asked.status_code == 202, asked.text
    request_id = asked.json()["request_id"]
    assert asked.json()["created"] is True and asked.json()["office"] == "50101"
    again = http.post(f"{url}/print-requests", json={"requested_by": DECLARANT_BIN}, headers=portal)
    assert again.status_code == 200 and again.json()["request_id"] == request_id
    assert_error(
        http.post(f"{url}/print-requests", json={"requested_by": "123"}, headers=portal), 400, "IIN_BIN_INVALID", "requested_by"
    )
    assert_error(http.post(f"{url}/print-requests", json={}, headers=inspector), 403, "CLIENT_KIND_NOT_ALLOWED")
    assert_error(http.post(f"{url}/print-requests", json={}, headers=bearer(ids=(OTHER_BIN,))), 403, "NOT_YOURS")
    queue = http.get("/v1/print-queue", headers=inspector)
    assert queue.status_code == 200 and [r["request_id"] for r in queue.json()] == [request_id]
    assert http.get("/v1/print-queue", headers=bearer("official", official=OTHER_OFFICE)).json() == []
    assert_error(http.get("/v1/print-queue", headers=portal), 403, "NOT_AN_OFFICIAL")

    key = officials.signer(INSPECTOR)
    assert_error(http.post(f"{url}/release-mark", json={}, headers=inspector), 422, "REQUEST_INVALID")  # unsigned
    mark = http.post(
        f"{url}/release-mark", json=signed_act(http, inspector, key, "affix_release_mark", application_id), headers=inspector
    )
    assert mark.status_code == 200 and mark.json()["affixed_by"] == INSPECTOR
    assert_error(
        http.post(
            f"{url}/release-mark", json=signed_act(http, inspector, key, "affix_release_mark", application_id), headers=inspector
        ),
        409,
        "MARK_ALREADY_AFFIXED",
    )

    def cancellation(grounds, text=""):
        return signed_act(http, inspector, key, "cancel_release", application_id, grounds=grounds, text=text)

    assert_error(
        http.post(f"{url}/release-cancellation", json=cancellation(["GOODS_NOT_ARRIVED"]), headers=inspector),
        400,
        "GROUND_NOT_APPLICABLE",
    )
    cancelled = http.post(f"{url}/release-cancellation", json=cancellation(["DOCUMENTS_INVALID"], "forged"), headers=inspector)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "release_cancelled"
    assert_error(
        http.post(f"{url}/release-cancellation", json=cancellation(["DOCUMENTS_INVALID"]), headers=inspector),
        409,
        "ALREADY_CANCELLED",
    )


# --- Hooks ----------------------------------------------------------------------------------------------


def test_a_failing_start_hook_still_gives_202_and_the_declaration_is_stored(app, http, company_signer, caplog):
    def broken(application_id: str) -> None:
        raise ConnectionError("Prefect is down")

    app.state.start_clearance = broken
    content = as_bytes(unique(sample()))
    with caplog.at_level(logging.WARNING, logger="customs.api"):
        response = http.post("/v1/declarations", files=multipart(content, company_signer.sign(content)), headers=bearer())
    assert response.status_code == 202, response.text
    assert stored(response.json()["application_id"]).content == content
    assert "batch-recheck" in caplog.text and "Prefect is down" in caplog.text


def test_async_hooks_are_awaited(app, http, company_signer):
    seen = []

    async def start(application_id: str) -> None:
        seen.append(application_id)

    app.state.start_clearance = start
    content = as_bytes(unique(sample()))
    response = http.post("/v1/declarations", files=multipart(content, company_signer.sign(content)), headers=bearer())
    assert seen == [response.json()["application_id"]]


# --- Clients ---------------------------------------------------------------------------------------------


def test_clients_are_validated_and_tokens_stored_hashed(settings):
    with pytest.raises(ValueError, match="check digit"):
        create_client("bad", "declarant", ["050840001234"])
    with pytest.raises(ValueError, match="at least one"):
        create_client("none", "declarant")
    with pytest.raises(ValueError, match="not an authorized official"):
        create_client("ghost", "official", official_id="KZ-OF-9999")
    with pytest.raises(ValueError, match="kind must be"):
        create_client("x", "robot")
    with pytest.raises(ValueError, match="takes no --id"):
        create_client("p", "portal", [DECLARANT_BIN])
    client, token = create_client("alatau", "declarant", [DECLARANT_BIN, DECLARANT_BIN])
    assert client.identifiers == [DECLARANT_BIN] and len(token) >= 43
    assert token not in client.token_sha256 and authenticate(token).name == "alatau"
    with pytest.raises(ValueError, match="exists already"):
        create_client("alatau", "portal")
    revoke_client("alatau")
    assert authenticate(token) is None and list_clients()[0].revoked_at is not None


# --- The OpenAPI document, checked by schemathesis against the app --------------------------------------


def test_openapi_document_declares_bearer_auth_and_error_responses(app):
    document = app.openapi()
    assert document["info"] == {
        "title": "Customs clearance intake API",
        "version": "1",
        "description": document["info"]["description"],
    }
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    submit = document["paths"]["/v1/declarations"]["post"]
    assert set(submit["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert {"200", "202", "401", "403", "413", "422"} <= set(submit["responses"])
    assert "security" not in document["paths"]["/v1/health"]["get"]


@pytest.fixture(params=["declarant", "official"])
def token_headers(request, settings, company_signer) -> dict[str, str]:
    """A valid token of each kind that has operations of its own, and one declaration stored (some lookups find it)."""
    from customs.services.intake import submit_declaration

    # one client calls every operation many times: the per-minute share of a client is not what is tested here
    configure(settings.model_copy(update={"api_client_submissions_per_minute": 100_000}))
    content = as_bytes(unique(sample()))
    submit_declaration(content, company_signer.sign(content))
    return bearer(request.param, official=INSPECTOR if request.param == "official" else None)


@SCHEMA.parametrize()
@hypothesis_settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_openapi_document(case, token_headers):
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

    case.call_and_validate(
        headers=token_headers,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )


def test_the_docs_page_works_offline(app):
    """Issue 17: /docs was blank without internet (Swagger UI came from a CDN). Its page names no external
    address, and its scripts and styles come from the API itself."""
    import re as _re

    with api_client(app) as http:
        for path, marker in (("/docs", "SwaggerUIBundle"), ("/redoc", "redoc.standalone.js")):
            page = http.get(path)
            assert page.status_code == 200 and marker in page.text, path
            assert _re.findall(r"https?://[^\s\"']+", page.text) == [], path
            assets = _re.findall(r"(/docs-assets/[\w.-]+)", page.text)
            assert assets, path
            for asset in assets:
                served = http.get(asset)
                assert served.status_code == 200 and len(served.content) > 500, asset
        # Swagger UI 5 reads OpenAPI 3.1 (4.15 said "Unable to render this definition" for FastAPI's 3.1.0)
        assert b"OpenAPI31" in http.get("/docs-assets/swagger-ui-bundle.js").content
        assert http.get("/openapi.json").json()["openapi"].startswith("3.1")
        assert http.get("/openapi.json").json()["info"]["title"] == "Customs clearance intake API"
