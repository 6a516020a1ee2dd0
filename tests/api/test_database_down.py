"""The intake API while its database is away: real HTTP (uvicorn on a free port), PostgreSQL behind a TCP gate
that is closed (connections refused, open ones cut) and opened again. Every endpoint that needs the database
answers 503 DATABASE_UNAVAILABLE with Retry-After in the API's error shape, nothing is stored meanwhile, and the
same request sent again once the database is back is accepted (once)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlmodel import select

from customs.api import create_app
from customs.core.db import dispose_engines, transaction
from customs.core.settings import configure
from customs.services.clients import create_client
from models.declaration import Declaration
from tests.helpers import DECLARANT_BIN, INSPECTOR, TcpGate, as_bytes, sample, served_api, unique


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.fixture
def gated(pg_settings):
    """The test's PostgreSQL schema, reached through a gate."""
    target = urlsplit(pg_settings.sqlalchemy_url)
    gate = TcpGate(target.hostname, target.port or 5432).open()
    settings = pg_settings.model_copy(update={"database_url": _through(pg_settings.database_url, gate.port)})
    dispose_engines()
    configure(settings)
    try:
        yield settings, gate
    finally:
        gate.close()
        dispose_engines()
        configure(pg_settings)


@pytest.fixture
def api(gated):
    with served_api(create_app()) as client:
        yield client


def _stored() -> int:
    with transaction() as session:
        return len(session.exec(select(Declaration.id)).all())


def _submission(signer) -> list:
    content = as_bytes(unique(sample()))
    return [
        ("declaration", ("declaration.json", content, "application/json")),
        ("signature", ("declaration.json.p7s", signer.sign(content), "application/pkcs7-signature")),
    ]


SIGNED_SHAPE = {"act": "e30=", "signature": "MAA="}  # a signed act's shape: what it says is never read while the database is away


def test_while_the_database_is_away_every_endpoint_answers_503_and_nothing_is_stored(gated, api, company_signer):
    _, gate = gated
    declarant = {"Authorization": f"Bearer {create_client('declarant', 'declarant', (DECLARANT_BIN,), None)[1]}"}
    official = {"Authorization": f"Bearer {create_client('inspector', 'official', (), INSPECTOR)[1]}"}
    accepted = api.post("/v1/declarations", files=_submission(company_signer), headers=declarant)
    assert accepted.status_code == 202, accepted.text
    application_id = accepted.json()["application_id"]
    assert _stored() == 1

    gate.close()  # the database is away: new connections refused, pooled ones cut
    waiting = _submission(company_signer)
    requests = [
        ("POST", "/v1/declarations", {"files": waiting, "headers": declarant}),
        ("GET", f"/v1/declarations/{application_id}", {"headers": declarant}),
        ("POST", f"/v1/declarations/{application_id}/print-requests", {"json": {}, "headers": declarant}),
        ("GET", "/v1/print-queue", {"headers": official}),
        ("POST", f"/v1/declarations/{application_id}/decision", {"json": SIGNED_SHAPE, "headers": official}),
        ("POST", f"/v1/declarations/{application_id}/release-mark", {"json": SIGNED_SHAPE, "headers": official}),
        ("POST", f"/v1/declarations/{application_id}/release-cancellation", {"json": SIGNED_SHAPE, "headers": official}),
        ("POST", "/v1/official-acts/draft", {"json": {"act": "decide", "declaration": application_id}, "headers": official}),
    ]
    for method, path, kwargs in requests:
        response = api.request(method, path, **kwargs)
        assert response.status_code == 503, (method, path, response.status_code, response.text)
        assert response.headers["retry-after"] == "5"
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "path", "message"}, body
        assert body["error"]["code"] == "DATABASE_UNAVAILABLE"
        assert "nothing of this request was stored" in body["error"]["message"]
    assert api.get("/v1/health").status_code == 200  # the process itself is alive
    readiness = api.get("/v1/health/ready")
    assert readiness.status_code == 503 and readiness.headers["retry-after"] == "5"
    assert readiness.json()["status"] == "unavailable"

    gate.open()  # back: the waiting submission is sent again, as the 503 said
    assert _stored() == 1  # nothing was stored while the database was away
    again = api.post("/v1/declarations", files=waiting, headers=declarant)
    assert again.status_code == 202, again.text
    assert api.post("/v1/declarations", files=waiting, headers=declarant).status_code == 200  # once
    assert _stored() == 2
    assert api.get(f"/v1/declarations/{application_id}", headers=declarant).status_code == 200
