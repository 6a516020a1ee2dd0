"""Shared fixtures: a fresh database per test, one test PKI per session, one Prefect test harness per session.
Helpers that are not fixtures live in tests/helpers.py."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from customs.core.clock import utcnow
from customs.core.db import dispose_engines, init_db
from customs.core.settings import Settings, configure
from customs.pki.testing import CmsSigner, TestPki
from tests.helpers import (
    AUTHORITY_BIN,
    DECLARANT_BIN,
    DECLARANT_IIN,
    OfficialKeys,
    SmtpServer,
    authority_settings,
    make_settings,
    postgres_url,
    reach_postgres,
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The fuzz tests (tests/fuzz, thousands of generated inputs, `make fuzz`) run only when -m names them."""
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    fuzz = [item for item in items if item.get_closest_marker("fuzz")]
    if fuzz:
        config.hook.pytest_deselected(items=fuzz)
        items[:] = [item for item in items if not item.get_closest_marker("fuzz")]


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> TestPki:
    # NCA's RSA and GOST hierarchies side by side, as production's trust directory has them
    return TestPki.create(tmp_path_factory.mktemp("pki"), now=utcnow() - timedelta(hours=1), families=("rsa", "gost2004"))


@pytest.fixture(scope="session")
def company_signer(pki) -> CmsSigner:
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN, label="company")
    return CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))


@pytest.fixture(scope="session")
def person_signer(pki) -> CmsSigner:
    issued = pki.issue(name="ТЕСТОВ ТЕСТ", iin=DECLARANT_IIN, label="person")
    return CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))


@pytest.fixture(scope="session")
def officials(pki) -> OfficialKeys:
    """The officials' NCA employee certificates (issued on first use) and their signed acts."""
    return OfficialKeys(pki)


@pytest.fixture(scope="session")
def authority_rsa(pki):
    """The revenue authority's service certificate (RSA): its PAdES signature goes inside the paper copy."""
    return pki.issue_authority(bin=AUTHORITY_BIN, name="КГД МФ РК (служебный)", family="rsa", label="authority-rsa")


@pytest.fixture(scope="session")
def authority_gost(pki):
    """The service certificate on GOST 34.310-2004: the paper copy gets a detached CMS kept with the request."""
    return pki.issue_authority(bin=AUTHORITY_BIN, name="КГД МФ РК (служебный)", family="gost2004", label="authority-gost2004")


@pytest.fixture(params=["rsa", "gost2004"])
def signed_settings(request, settings, pki, authority_rsa, authority_gost) -> Settings:
    """``settings`` with the authority's service certificate configured, once RSA, once GOST."""
    issued = authority_rsa if request.param == "rsa" else authority_gost
    configured = settings.model_copy(update=authority_settings(pki, issued))
    configure(configured)
    return configured


@pytest.fixture
def settings(tmp_path, pki) -> Settings:
    """A fresh SQLite database for this test, trusting the session's test PKI."""
    configured = make_settings(tmp_path / "data", pki)
    configure(configured)
    init_db(configured)
    yield configured
    configure(None)
    dispose_engines()


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (it takes ~20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def pg_settings(tmp_path, pki):
    """A PostgreSQL schema of its own for this test (skipped when PostgreSQL is unreachable, unless CI requires it)."""
    import sqlalchemy

    url = postgres_url() or "postgresql://postgres@127.0.0.1:5432/test"
    base = Settings(data_dir=tmp_path, database_url=url).sqlalchemy_url
    engine = sqlalchemy.create_engine(base)
    reach_postgres(engine, url)
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


@pytest.fixture
def smtp_server():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_settings(tmp_path, pki, smtp_server) -> Settings:
    """A fresh SQLite database whose notices go to the test SMTP server."""
    configured = make_settings(tmp_path / "data", pki, smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_timeout=5)
    configure(configured)
    init_db(configured)
    yield configured
    configure(None)
    dispose_engines()
