"""Schemathesis against the intake API in-process (its own OpenAPI document, every operation), with real
client tokens of each kind (declarant, portal, official) on a database holding declarations in several
states (some generated lookups and acts find them); then without a token, and on paths nobody documented.

Checks: no 5xx; status codes, content types, headers and bodies as the document gives them; data that breaks
the document's schema is refused (4xx); a refused submission, and any lookup, stores nothing. Without a
token every /v1 route but the public ones (``PUBLIC_PATHS`` of customs.api.limits: the health checks and the QR
code's check) answers 401, before a byte of the body is read."""

from __future__ import annotations

import base64
import json
import os
import random
from dataclasses import dataclass

import anyio
import pytest
import schemathesis
from hypothesis import given, seed
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from customs.api import create_app
from customs.api.limits import PUBLIC_PATHS
from customs.core.db import dispose_engines, init_db
from customs.core.settings import configure
from customs.services.clients import create_client
from customs.services.intake import submit_declaration
from tests.fuzz.strategies import document_bytes, plausible_document_bytes
from tests.fuzz.support import NOTES, added, audited_refusal_only, fuzz_settings, outcome, row_counts, tally
from tests.helpers import (
    DECLARANT_BIN,
    DECLARANT_IIN,
    INSPECTOR,
    as_bytes,
    http_scope,
    make_settings,
    run_steps,
    sample,
    stored,
    unique,
)

pytestmark = pytest.mark.fuzz

SEED = int(os.environ.get("CUSTOMS_FUZZ_SEED") or random.SystemRandom().getrandbits(32))
NOTES.append(f"schemathesis seed {SEED} (CUSTOMS_FUZZ_SEED={SEED} repeats its requests)")
APP = create_app()
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)  # the document needs no database
# valid and invalid requests; the Authorization header is the test's (each kind's token, or none), not generated
SCHEMA.config.generation.update(modes=["positive", "negative"], with_security_parameters=False)
SCHEMA.config.seed = SEED
# A body over the route's size limit is refused by the gate with 413 (documented on every route with a body) before it
# is parsed: for a schema-violating request (a signature past its maxLength) that is a refusal like 400 or 422
_rejection = SCHEMA.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def _checks_for(case) -> list:
    """CHECKS, but for the verification of a document sent as multipart: schemathesis makes "negative" requests there
    by breaking the `format: binary` of the file fields, which any bytes satisfy (a multipart file is bytes), and the
    endpoint rightly answers 200 with the signature found not genuine (seed 1743893218 showed it). Its other checks
    stay, and its JSON body keeps the rejection check (base64, `format: byte`, can be broken)."""
    if case.path == "/v1/documents/verify" and case.media_type == "multipart/form-data":
        return [check for check in CHECKS if check is not negative_data_rejection]
    return CHECKS


@dataclass
class World:
    tokens: dict[str, dict[str, str]]
    keys: list[str]  # application ids and registration numbers of stored declarations


@pytest.fixture(scope="module")
def world(tmp_path_factory, pki, company_signer):
    """One database for the module: a client of each kind, and declarations released, awaiting an official
    and just submitted (state the fuzzing then changes: decisions, marks, cancellations, print requests)."""
    configured = make_settings(tmp_path_factory.mktemp("fuzz-api") / "data", pki)
    configure(configured)
    init_db(configured)
    tokens = {}
    for kind, ids, official in (
        ("declarant", (DECLARANT_BIN, DECLARANT_IIN), None),
        ("portal", (), None),
        ("official", (), INSPECTOR),
    ):
        _, token = create_client(f"fuzz-{kind}", kind, ids, official)
        tokens[kind] = {"Authorization": f"Bearer {token}"}
    keys = []
    for name, steps in (("01-green-household-appliances.json", True), ("03-unpaid-vat.json", True), (None, False)):
        content = as_bytes(unique(sample(name) if name else sample()))
        application_id = submit_declaration(content, company_signer.sign(content)).application_id
        if steps:
            run_steps(application_id)
        keys += [application_id, stored(application_id).registration_number or application_id]
    yield World(tokens, keys)
    configure(None)
    dispose_engines()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def as_client(kind: str, case, data, world: World) -> None:
    """A generated request (valid or invalid for the document) with ``kind``'s token; a path key is sometimes one
    of a stored declaration, a valid JSON submission sometimes carries a generated declaration."""
    group = f"schemathesis: {kind} token"
    tally(group)
    operation = f"{case.method} {case.path}"
    submission = operation == "POST /v1/declarations"
    valid = case.meta is None or not case.meta.generation.mode.is_negative  # invalid ones stay as generated
    if valid and "key" in (case.path_parameters or {}) and data.draw(st.booleans(), label="known key"):
        case.path_parameters["key"] = data.draw(st.sampled_from(world.keys), label="key")
    if (
        valid
        and submission
        and case.media_type == "application/json"
        and isinstance(case.body, dict)
        and data.draw(st.booleans())
    ):
        content = data.draw(plausible_document_bytes() | document_bytes(), label="declaration")
        case.body["declaration"] = b64(content)
    before = row_counts()
    response = case.call(headers=world.tokens[kind])
    outcome(group, f"{operation} {response.status_code}")
    case.validate_response(response, checks=_checks_for(case), headers=world.tokens[kind])
    if case.method == "GET":
        assert row_counts() == before, f"{operation} answered {response.status_code} and stored {added(before, row_counts())}"
    elif submission and response.status_code >= 400:  # an official's paper entry refused: its audit event only
        after = row_counts()
        assert audited_refusal_only(before, after), (
            f"{operation} answered {response.status_code} and stored {added(before, after)}"
        )


def operations_as(kind: str, offset: int):
    """Every operation as a ``kind`` client. Schemathesis gives every test of a schema the same seed: each kind
    gets its own (SEED + offset), so that the three see different requests."""

    def test(case, data, world):
        as_client(kind, case, data, world)

    test.__name__ = test.__qualname__ = f"test_every_operation_as_{kind}"  # before schemathesis names the items
    return SCHEMA.parametrize()(SCHEMA.given(data=st.data())(fuzz_settings(180)(seed(SEED + offset)(test))))


test_every_operation_as_declarant = operations_as("declarant", 1)
test_every_operation_as_portal = operations_as("portal", 2)
test_every_operation_as_official = operations_as("official", 3)


@SCHEMA.parametrize()
@fuzz_settings(60)
def test_without_a_token_every_operation_but_the_public_ones_answers_401(case, world):
    """The public paths are the gate's own list (a route made public there is fuzzed as documented, not as 401)."""
    group = "schemathesis: no token"
    tally(group)
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    response = case.call()
    outcome(group, f"{case.method} {case.path} {response.status_code}")
    if case.path in PUBLIC_PATHS:
        case.validate_response(response, checks=CHECKS)
        return
    if case.method == "OPTIONS":  # the gate lets OPTIONS (CORS preflight) through: no route answers it, nothing is read
        assert response.status_code == 405, response.text
        return
    assert response.status_code == 401, response.text
    challenge = {k.lower(): v for k, v in response.headers.items()}["www-authenticate"]  # schemathesis: name -> [values]
    assert challenge[0].startswith("Bearer"), challenge
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


# --- Paths nobody documented, straight through the ASGI interface ------------------------------------------


def asgi_call(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, dict, bool]:
    """(status, JSON body, whether any of the body was read)."""
    sent: list[dict] = []
    read = False

    async def receive():
        nonlocal read
        if not read:
            read = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = http_scope(method, path, headers)
    anyio.run(APP, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(content) if content else {}, read


tails = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["health", "health/", "Health", "health/..", "declarations", "declarations/", "print-queue"]),
    st.sampled_from(sorted(path.removeprefix("/v1/") for path in PUBLIC_PATHS)),
    st.sampled_from(["declarations/A261129-X", "declarations/50101/261126/0000001/decision", "%2e%2e/openapi.json"]),
)
authorizations = st.one_of(
    st.just([]),
    st.sampled_from(["Bearer", "Bearer ", "bearer x", "Basic dXNlcjpwYXNz", "Bearer \t", "Token abc"]).map(
        lambda v: [(b"authorization", v.encode())]
    ),
    st.binary(max_size=60).map(lambda v: [(b"authorization", v)]),
)


@fuzz_settings(1200)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
    tail=tails,
    authorization=authorizations,
    body=st.binary(max_size=64),
)
def test_any_v1_path_without_a_valid_token_answers_401_without_reading_the_body(world, method, tail, authorization, body):
    group = "hypothesis: /v1/* without a valid token (ASGI)"
    tally(group)
    path = "/v1/" + tail
    status, answer, read = asgi_call(method, path, authorization, body)
    outcome(group, str(status))
    if path in PUBLIC_PATHS:  # let through by the gate: the route answers (readiness may say 503: not ready)
        assert status < 500 or (path, status) == ("/v1/health/ready", 503), (path, status, answer)
        return
    assert (status, answer["error"]["code"], read) == (401, "UNAUTHENTICATED", False), (path, status, answer)
