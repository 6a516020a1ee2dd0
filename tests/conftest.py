"""Shared fixtures: a fresh database per test, one test PKI per session, one Prefect test harness per session."""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from customs.core.db import dispose_engines, init_db  # noqa: E402
from customs.pki.testing import CmsSigner, TestPki  # noqa: E402
from customs.core.settings import Settings, configure  # noqa: E402
from customs.core.clock import utcnow  # noqa: E402

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


def run_steps(application_id: str, now=None):
    """The clearance steps as plain functions, in the flow's order."""
    from models.declaration import Status
    from customs.services.steps import register_declaration
    from customs.services.steps import release_or_hold
    from customs.services.steps import assign_lane
    from customs.services.steps import check_signatures

    check_signatures(application_id, now=now)
    outcome = register_declaration(application_id, now=now)
    if outcome.status == Status.REGISTRATION_REFUSED:
        return outcome
    assign_lane(application_id, now=now)
    return release_or_hold(application_id, now=now)


def submit_signed(signer, document: dict, attachments=(), **kw):
    from customs.services.intake import IncomingAttachment, submit_declaration

    content = as_bytes(document)
    files = [IncomingAttachment(name, data, signer.sign(data)) for name, data in attachments]
    return submit_declaration(content, signer.sign(content), files, **kw)


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


# ----------------------------------------------------------------------------------------------
# A real SMTP server on loopback (aiosmtpd) that records what it receives and can refuse on cue.


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RecordingSmtpHandler:
    """aiosmtpd handler: keeps every accepted message; ``replies[address]`` lists RCPT answers to give first."""

    def __init__(self):
        self.received: list[dict] = []
        self.replies: dict[str, list[str]] = {}
        self.always: dict[str, str] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.always:
            return self.always[address]
        queued = self.replies.get(address)
        if queued:
            return queued.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        import email
        from email import policy

        raw = envelope.original_content or envelope.content
        self.received.append({
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "raw": raw,
            "message": email.message_from_bytes(raw, policy=policy.default),
        })
        return "250 2.0.0 Message accepted for delivery"


class SmtpServer:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.handler = RecordingSmtpHandler()
        self.controller = None

    def start(self) -> "SmtpServer":
        from aiosmtpd.controller import Controller

        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def received(self) -> list[dict]:
        return self.handler.received


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


def wait_until(predicate, what: str, timeout: float = 60.0):
    """Poll ``predicate`` until it returns something true (returned), or fail naming what never happened."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
