"""Hypothesis against the submission path, on a database of its own per test: ``submit_declaration``
itself (channels, officials, signatures and attachments of every shape), then the clearance steps on what
it accepted (signatures, registration's format and logic control, lane, release); and the same documents
through the HTTP API (JSON with base64 or multipart, as a declarant, the portal or an official). Both run on
SQLite and on PostgreSQL (when 127.0.0.1:5432 or CUSTOMS_TEST_POSTGRES_URL answers; skipped otherwise).

An input is accepted or refused with a reason code and a path, never another exception (HTTP: never 500);
a refused input stores nothing: every table has as many rows after it as before."""

from __future__ import annotations

import base64
import hashlib
import json
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import select

from customs.api import create_app
from customs.core.db import transaction
from customs.rules import Refused
from customs.services.clients import create_client
from customs.services.intake import IncomingAttachment, paper_act_subject, submit_declaration
from customs.services.official_acts import SignedAct, draft_act
from models.audit import verify_chain
from models.declaration import Declaration, Status
from tests.fuzz.strategies import TRICKY_STRINGS, document_bytes, plausible_document_bytes
from tests.fuzz.support import added, audited_refusal_only, fuzz_settings, outcome, row_counts, tally
from tests.fuzz.test_documents import INTAKE_CODES, check_reason
from tests.helpers import DECLARANT_BIN, DECLARANT_IIN, INSPECTOR, OTHER_OFFICE, SUPERVISOR, run_steps, stored

with warnings.catch_warnings():  # as in tests/api/test_api.py
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.fuzz

SUBMISSION_CODES = INTAKE_CODES | {
    "CHANNEL_UNKNOWN",
    "TOO_MANY_ATTACHMENTS",
    "OFFICIAL_REQUIRED",
    "OFFICIAL_UNKNOWN",
    "OFFICE_MISMATCH",
    "PAPER_SIGNED",
    "OFFICIAL_NOT_EXPECTED",
    # issue 23: a paper declaration is entered by the official's signed act (refused and audited otherwise)
    "SIGNATURE_MISSING",
    "SIGNATURE_INVALID",
    "SIGNER_NOT_OFFICIAL",
    "ACT_MISMATCH",
    "ACT_MALFORMED",
}
# where a declaration may rest after the steps (a paper one is not signed: its signatures are not checked)
RESTING = {Status.REGISTRATION_REFUSED, Status.RELEASED, Status.AWAITING_OFFICIAL}

filenames = st.one_of(st.text(max_size=300), st.sampled_from(TRICKY_STRINGS + ["a/b\\c.pdf", "....", " .hidden", "x" * 400]))
signatures = st.one_of(st.none(), st.just(b""), st.binary(min_size=1, max_size=80))
contents = st.integers(0, 29).flatmap(lambda n: st.just(b"") if n == 0 else st.binary(min_size=1, max_size=64))
attachments = st.lists(
    st.builds(
        IncomingAttachment, filename=filenames, content=st.binary(min_size=1, max_size=64) | st.just(b""), signature=signatures
    ),
    max_size=3,
)
# (channel, the official the act names, who signs it: the official, another official, nobody, garbage)
channels = st.sampled_from(
    [
        ("electronic", None, None),
        ("electronic", None, None),
        ("portal", None, None),
        ("paper", INSPECTOR, "own"),
        ("paper", INSPECTOR, "own"),
        ("paper", INSPECTOR, "own"),
        ("paper", INSPECTOR, "another"),
        ("paper", INSPECTOR, "garbage"),
        ("paper", OTHER_OFFICE, "own"),
        ("paper", None, None),
        ("paper", "KZ-OF-9999", "another"),
        ("electronic", INSPECTOR, "own"),
        ("fax", None, None),
    ]
)


def paper_act(officials, content: bytes, official: str | None, signer: str | None) -> SignedAct | None:
    """The act entering ``content``, named for ``official`` and signed by them, another official, or nobody."""
    if official is None:
        return None
    try:
        subject = paper_act_subject(content)
    except Refused:  # intake refuses the document itself first
        subject = {"declaration_sha256": hashlib.sha256(content).hexdigest(), "customs_office": ""}
    document = draft_act("enter_paper_declaration", official_id=official, subject=subject)
    if signer == "garbage":
        return SignedAct(document, b"0\x03\x02\x01\x00")
    return SignedAct(document, officials.signer(official if signer == "own" else SUPERVISOR).sign(document))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request):
    """SQLite, and PostgreSQL when it answers (it refuses text SQLite takes: a NUL); as tests/conftest.py sets them up."""
    return request.getfixturevalue("settings" if request.param == "sqlite" else "pg_settings")


@pytest.fixture
def intact_chains(database):
    yield
    with transaction() as session:
        check = verify_chain(session)
    assert check.intact, check


@fuzz_settings(1000)
@given(
    content=document_bytes() | plausible_document_bytes(),
    signature=st.integers(0, 7).flatmap(lambda n: st.just("signed") if n == 0 else signatures),
    files=attachments,
    channel=channels,
    steps=st.booleans(),
)
def test_submit_declaration_accepts_or_refuses_and_a_refusal_stores_nothing(
    database, company_signer, officials, intact_chains, content, signature, files, channel, steps
):
    engine = "postgresql" if database.sqlalchemy_url.startswith("postgresql") else "sqlite"
    group = f"hypothesis: submit_declaration (+ clearance steps on accepted ones), {engine}"
    tally(group)
    channel, official, signer = channel
    if signature == "signed":  # by the samples' company (0.2 s a signature): a mutated document goes on to registration
        signature = company_signer.sign(content) if content else b""
    elif channel == "paper" and official and not any(a.signature for a in files):
        signature = None  # paper entry unsigned: more of these get past intake
    act = paper_act(officials, content, official, signer)
    before = row_counts()
    try:
        submission = submit_declaration(content, signature, files, channel=channel, act=act)
    except Refused as refused:
        assert refused.code in SUBMISSION_CODES, refused
        check_reason(refused.reason, in_document=refused.code in INTAKE_CODES and refused.path.startswith("$"))
        assert audited_refusal_only(before, row_counts()), f"{refused.code}: stored {added(before, row_counts())}"
        outcome(group, refused.code)
        return
    after = row_counts()
    if not submission.created:  # the same bytes came before (hypothesis repeats itself): the same application
        assert after == before
        outcome(group, "already submitted")
        return
    new = added(before, after)
    assert new["declaration"] == 1 and new["audit_event"] == 1 and new.get("attachment", 0) == len(files), new
    assert new.get("official_act", 0) == (channel == "paper"), new  # the paper entry's act, kept
    declaration = stored(submission.application_id)
    assert declaration.content == content and declaration.status == Status.SUBMITTED
    if not steps:
        outcome(group, f"accepted ({channel})")
        return
    final = run_steps(submission.application_id).status  # invalid signatures: registration is refused
    assert final in RESTING, final
    outcome(group, f"accepted ({channel}), then {final}")


# --- Through the HTTP API -------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@st.composite
def submissions(draw):
    """(client kind, headers, body): a JSON envelope or a multipart form around a generated document, sometimes
    with the envelope itself broken (not base64, a wrong type, an unknown key, not JSON, another media type)."""
    content = draw(document_bytes())
    kind = draw(st.sampled_from(["declarant", "portal", "official"]))
    # who signs the official's act that goes with it (added by the test, which holds the officials' keys)
    act = draw(st.sampled_from(["own", "own", "own", "another", None] if kind == "official" else [None] * 9 + ["own"]))
    signature = None if kind == "official" and draw(st.integers(0, 3)) else draw(st.binary(min_size=1, max_size=60))
    files = draw(st.lists(st.tuples(filenames.filter(bool), st.binary(min_size=1, max_size=40)), max_size=2))
    unsigned = kind == "official" or draw(st.integers(0, 9)) == 0
    if draw(st.booleans()):
        envelope = {"declaration": b64(content)}
        if signature is not None:
            envelope["signature"] = b64(signature)
        envelope["attachments"] = [
            {"filename": name, "content": b64(data), **({} if unsigned else {"signature": b64(data[::-1])})}
            for name, data in files
        ]
        broken = draw(st.sampled_from([None] * 6 + ["base64", "type", "extra", "missing", "text", "media"]))
        media = "application/json"
        if broken == "base64":
            envelope["declaration"] = draw(st.sampled_from(["not base64!", "e30", "====", "\u00e9", "e30=\n\n", "-_-_"]))
        elif broken == "type":
            envelope[draw(st.sampled_from(["declaration", "signature", "attachments"]))] = draw(
                st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2), st.just({}))
            )
        elif broken == "extra":
            envelope[draw(st.text(min_size=1, max_size=10))] = 1
        elif broken == "missing":
            envelope.pop("declaration")
        body = json.dumps(envelope).encode("utf-8")
        if broken == "text":
            body = draw(st.sampled_from([body[: len(body) // 2], b"\xff" + body, body.replace(b'"', b"'", 1), content]))
        elif broken == "media":
            media = draw(st.sampled_from(["text/plain", "application/evil+json", "", "application/x-www-form-urlencoded"]))
        return kind, {"Content-Type": media} if media else {}, {"content": body}, act
    form = [("declaration", ("declaration.json", content, "application/json"))]
    if signature is not None:
        form.append(("signature", ("declaration.json.p7s", signature, "application/pkcs7-signature")))
    for name, data in files:
        name = name.encode("utf-8", "replace").decode("utf-8")  # httpx cannot write a lone surrogate in a header
        form.append(("attachments", (name, data, "application/octet-stream")))
        if not unsigned:
            form.append(("attachment_signatures", (f"{name}.p7s", data[::-1], "application/pkcs7-signature")))
    if draw(st.integers(0, 9)) == 0:
        form.append((draw(st.sampled_from(["comment", "declaration", "signature", ""])), ("x", b"x", "text/plain")))
    return kind, {}, {"files": form}, act


def with_act(officials, body: dict, signer: str) -> dict:
    """The request with the official's act entering its declaration (INSPECTOR's, the official client's), signed by
    them or by another official: as two more parts of a form, or two base64 fields of a JSON envelope that reads."""
    if "files" in body:
        content = next((part[1][1] for part in body["files"] if part[0] == "declaration"), None)
        if content is None:
            return body
        act = paper_act(officials, content, INSPECTOR, signer)
        parts = [("act", ("act.json", act.document, "application/json")), ("act_signature", ("act.p7s", act.signature, "x"))]
        return {"files": body["files"] + parts}
    try:
        envelope = json.loads(body["content"])
        content = base64.b64decode(envelope["declaration"], validate=True)
    except Exception:  # the envelope is broken on purpose: it is refused before any act is read
        return body
    act = paper_act(officials, content, INSPECTOR, signer)
    envelope |= {"act": b64(act.document), "act_signature": b64(act.signature)}
    return {"content": json.dumps(envelope).encode("utf-8")}


@pytest.fixture
def http(database):
    app = create_app()
    tokens = {}
    for kind, ids, official in (("declarant", (DECLARANT_BIN, DECLARANT_IIN), None), ("portal", (), None)) + (
        ("official", (), INSPECTOR),
    ):
        _, token = create_client(f"fuzz-{kind}", kind, ids, official)
        tokens[kind] = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        yield client, tokens


ANSWERS = {200, 202, 400, 403, 413, 415, 422}


@fuzz_settings(1000)
@given(submission=submissions())
def test_the_api_answers_every_submission_with_a_documented_status_and_a_refusal_stores_nothing(
    database, http, officials, intact_chains, submission
):
    engine = "postgresql" if database.sqlalchemy_url.startswith("postgresql") else "sqlite"
    group = f"hypothesis: POST /v1/declarations (JSON and multipart, 3 kinds of client), {engine}"
    tally(group)
    client, tokens = http
    kind, headers, body, act = submission
    if act is not None:
        body = with_act(officials, body, act)
    before = row_counts()
    response = client.post("/v1/declarations", headers={**tokens[kind], **headers}, **body)
    assert response.status_code in ANSWERS, (response.status_code, response.text)
    after = row_counts()
    if response.status_code >= 400:
        error = response.json()
        assert set(error) == {"error"} and set(error["error"]) == {"code", "path", "message"}, error
        assert error["error"]["code"] and error["error"]["message"], error  # the path of a form field without a name is ''

        assert audited_refusal_only(before, after), (
            f"{response.status_code} {error['error']['code']}: stored {added(before, after)}"
        )
        outcome(group, f"{response.status_code} {error['error']['code']}")
        return
    outcome(group, str(response.status_code))
    answer = response.json()
    with transaction() as session:
        declaration = session.exec(select(Declaration).where(Declaration.application_id == answer["application_id"])).one()
    assert answer["status"] == declaration.status.value
    if response.status_code == 202:
        assert added(before, after)["declaration"] == 1 and response.headers["location"] == answer["status_url"]
    else:
        assert after == before
    status = client.get(answer["status_url"], headers=tokens[kind])  # and the client that submitted reads it back
    assert status.status_code == 200 and status.json()["application_id"] == answer["application_id"], status.text
