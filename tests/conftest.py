"""Shared fixtures: a fresh database per test, one test PKI per session, one Prefect test harness per session."""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from customs.db import dispose_engines, init_db  # noqa: E402
from customs.pki import CmsSigner, TestPki  # noqa: E402
from customs.settings import Settings, configure  # noqa: E402
from customs.timeutil import utcnow  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
NCA_REAL = ROOT.parent / "shared" / "fixtures" / "nca-real"

DECLARANT_BIN = "050840001233"
DECLARANT_IIN = "880501300124"


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> TestPki:
    return TestPki.create(tmp_path_factory.mktemp("pki"), now=utcnow() - timedelta(hours=1))


@pytest.fixture(scope="session")
def company_signer(pki) -> CmsSigner:
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN, label="company")
    return CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))


@pytest.fixture(scope="session")
def person_signer(pki) -> CmsSigner:
    issued = pki.issue(name="ТЕСТОВ ТЕСТ", iin=DECLARANT_IIN, label="person")
    return CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))


def make_settings(data_dir: Path, pki: TestPki | None = None, **overrides) -> Settings:
    values = dict(data_dir=data_dir)
    if pki is not None:
        values.update(trust_dir=pki.trust_dir, crl_dir=pki.crl_dir)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path, pki) -> Settings:
    """A fresh SQLite database for this test, trusting the session's test PKI."""
    configured = make_settings(tmp_path / "data", pki)
    configure(configured)
    init_db(configured)
    yield configured
    configure(None)
    dispose_engines()


def sample(name: str = "01-green-household-appliances.json") -> dict:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def as_bytes(document: dict) -> bytes:
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")


def unique(document: dict) -> dict:
    """The same declaration with a fresh invoice number, so its bytes are new."""
    document = json.loads(json.dumps(document))
    document["documents"][0]["number"] = f"INV-{uuid.uuid4().hex[:10]}"
    return document


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (it takes ~20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def postgres_url() -> str | None:
    return os.environ.get("CUSTOMS_TEST_POSTGRES_URL")


@pytest.fixture
def pg_settings(tmp_path, pki):
    """A PostgreSQL schema of its own for this test (skipped when PostgreSQL is unreachable, unless CI requires it)."""
    import sqlalchemy

    url = postgres_url() or "postgresql://postgres@127.0.0.1:5432/test"
    base = Settings(data_dir=tmp_path, database_url=url).sqlalchemy_url
    try:
        engine = sqlalchemy.create_engine(base)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
    except Exception as exc:
        if os.environ.get("CUSTOMS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (CUSTOMS_REQUIRE_POSTGRES=1) but {url} is unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {url} is unreachable: {exc}")
    schema = f"customs_test_{uuid.uuid4().hex[:12]}"
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    scoped = f"{base}{separator}options=-csearch_path%3D{schema}"
    configured = make_settings(tmp_path / "data", pki, database_url=scoped)
    configure(configured)
    init_db(configured)
    yield configured
    configure(None)
    dispose_engines()
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()
