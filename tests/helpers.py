"""What the tests share besides fixtures: sample documents, submitting and clearing them as plain
functions, reading back what was stored, a real SMTP server on loopback, waiting for something to happen."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import time
import uuid
from pathlib import Path

from sqlmodel import select

from customs.core.db import transaction
from customs.core.settings import Settings
from customs.pki.testing import TestPki
from customs.services.intake import IncomingAttachment, submit_declaration
from customs.services.steps import assign_lane, check_signatures, register_declaration, release_or_hold
from models.audit import AuditEvent
from models.declaration import Declaration, Status
from models.outbox import DeliveryAttempt, Notice, NoticeKind

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
NCA_REAL = ROOT.parent / "shared" / "fixtures" / "nca-real"
TESTS = Path(__file__).resolve().parent

DECLARANT_BIN = "050840001233"
DECLARANT_IIN = "880501300124"

# Officials of reference/officials.json
INSPECTOR = "KZ-OF-0001"  # office 50101, zone ALA-TSW
SUPERVISOR = "KZ-OF-0002"  # office 50101, zone ALA-TSW
OTHER_ZONE = "KZ-OF-0003"  # office 50101, zone ALA-AIR
OTHER_OFFICE = "KZ-OF-0005"  # office 62101


AUTHORITY_BIN = "990140000007"  # reference/officials.json: the revenue authority


def make_settings(data_dir: Path, pki: TestPki | None = None, *, authority=None, **overrides) -> Settings:
    """``authority``: an IssuedSigner of ``pki`` (``TestPki.issue_authority``) configured as the service certificate."""
    values = dict(data_dir=data_dir)
    if pki is not None:
        values.update(trust_dir=pki.trust_dir, crl_dir=pki.crl_dir)
    if authority is not None:
        values.update(authority_settings(pki, authority))
    values.update(overrides)
    return Settings(**values)


def authority_settings(pki: TestPki, issued) -> dict:
    """The settings of a service certificate issued by ``pki``: its certificate, key and its family's issuing CA."""
    from cryptography import x509

    family = next(
        f
        for f in pki.families
        if x509.load_pem_x509_certificate(pki.issuing_cert_path_of(f).read_bytes()).subject == issued.certificate.issuer
    )
    return {
        "authority_cert": issued.cert_path,
        "authority_key": issued.key_path,
        "authority_chain": pki.issuing_cert_path_of(family),
    }


def postgres_url() -> str | None:
    return os.environ.get("CUSTOMS_TEST_POSTGRES_URL")


def reach_postgres(engine, url: str) -> None:
    """Skip the test when PostgreSQL at ``url`` is unreachable; fail it instead when CI requires PostgreSQL."""
    import pytest
    import sqlalchemy

    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
    except Exception as exc:
        if os.environ.get("CUSTOMS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (CUSTOMS_REQUIRE_POSTGRES=1) but {url} is unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {url} is unreachable: {exc}")


# ----------------------------------------------------------------------------------------------
# Declarations


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
    check_signatures(application_id, now=now)
    outcome = register_declaration(application_id, now=now)
    if outcome.status == Status.REGISTRATION_REFUSED:
        return outcome
    assign_lane(application_id, now=now)
    return release_or_hold(application_id, now=now)


def submit_signed(signer, document: dict, attachments=(), **kw):
    content = as_bytes(document)
    files = [IncomingAttachment(name, data, signer.sign(data)) for name, data in attachments]
    return submit_declaration(content, signer.sign(content), files, **kw)


def cleared(signer, document: dict | None = None) -> Declaration:
    """A declaration (sample 01 by default) submitted and taken through the steps; as stored afterwards."""
    application_id = submit_signed(signer, document or unique(sample())).application_id
    run_steps(application_id)
    return stored(application_id)


# ----------------------------------------------------------------------------------------------
# What was stored


def stored(application_id: str) -> Declaration:
    with transaction() as session:
        return session.exec(select(Declaration).where(Declaration.application_id == application_id)).one()


def events(application_id: str, event: str | None = None) -> list[AuditEvent]:
    with transaction() as session:
        query = select(AuditEvent).where(AuditEvent.application_id == application_id).order_by(AuditEvent.seq)
        if event:
            query = query.where(AuditEvent.event == event)
        return list(session.exec(query))


def notices(application_id: str | None = None, kind: NoticeKind | None = None) -> list[Notice]:
    with transaction() as session:
        query = select(Notice).order_by(Notice.id)
        if application_id:
            query = query.where(Notice.application_id == application_id)
        if kind:
            query = query.where(Notice.kind == kind)
        return list(session.exec(query))


def flow_runs_of(application_id: str):
    """The clearance flow runs of a declaration, as the Prefect API has them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["clearance"])))
    return [r for r in runs if r.parameters.get("application_id") == application_id]


def attempts_of(notice_id: int) -> list[DeliveryAttempt]:
    with transaction() as session:
        return list(
            session.exec(select(DeliveryAttempt).where(DeliveryAttempt.notice_id == notice_id).order_by(DeliveryAttempt.id))
        )


# ----------------------------------------------------------------------------------------------
# An attacker with write access to the database: edits the audit chains so that they still verify on their own


def drop_audit_triggers() -> None:
    from sqlalchemy import text

    from customs.core.db import get_engine

    with get_engine().begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event"))
        else:
            connection.execute(text("DROP TRIGGER IF EXISTS audit_event_no_update"))
            connection.execute(text("DROP TRIGGER IF EXISTS audit_event_no_delete"))


def _chain_events(session, chain: str) -> list[AuditEvent]:
    if chain == "legacy":
        return list(session.exec(select(AuditEvent).where(AuditEvent.chain.is_(None)).order_by(AuditEvent.seq)))
    return list(session.exec(select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.chain_seq)))


def _set_head(session, chain: str, seq: int, last_hash: str) -> None:
    from sqlalchemy import update

    from models.audit import AuditChain, AuditHead

    if chain == "legacy":
        session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=seq, last_hash=last_hash))
    else:
        session.execute(update(AuditChain).where(AuditChain.chain == chain).values(seq=seq, last_hash=last_hash))


def rewrite_audit_event(chain: str, position: int, **changes) -> None:
    """Change the event at ``position`` of ``chain`` (its details, say), then recompute its hash, every later
    event's prev_hash and hash, and the chain head, as an attacker would: the chain alone then verifies."""
    from models.audit import GENESIS_HASH, event_hash

    drop_audit_triggers()
    with transaction() as session:
        rows = _chain_events(session, chain)
        previous = rows[position - 2].hash if position > 1 else GENESIS_HASH
        for index, event in enumerate(rows[position - 1 :], start=position):
            if index == position:
                for name, value in changes.items():
                    setattr(event, name, value)
            event.prev_hash = previous
            event.hash = event_hash(
                seq=index,
                chain=event.chain,
                application_id=event.application_id,
                event=event.event,
                from_status=event.from_status,
                to_status=event.to_status,
                actor=event.actor,
                at=event.at,
                reasons=event.reasons,
                details=event.details,
                prev_hash=event.prev_hash,
            )
            previous = event.hash
            session.add(event)
            session.flush()
        _set_head(session, chain, len(rows), previous)


def truncate_audit_chain(chain: str, keep: int) -> None:
    """Delete the events of ``chain`` after position ``keep`` and rewind its head to the last one kept."""
    from sqlalchemy import delete

    from models.audit import GENESIS_HASH

    drop_audit_triggers()
    with transaction() as session:
        rows = _chain_events(session, chain)
        for event in rows[keep:]:
            session.execute(delete(AuditEvent).where(AuditEvent.seq == event.seq))
        _set_head(session, chain, keep, rows[keep - 1].hash if keep else GENESIS_HASH)


# ----------------------------------------------------------------------------------------------
# E-mail: the parts of a message, and a real SMTP server on loopback (aiosmtpd) that records what it
# receives and can refuse on cue


def parts(message) -> dict[str, str]:
    found = {}
    for part in message.walk():
        if part.get_content_type() in ("text/plain", "text/html") and not part.get_filename():
            found[part.get_content_type()] = part.get_content()
    return found


def attachments(message) -> dict[str, bytes]:
    return {part.get_filename(): part.get_payload(decode=True) for part in message.iter_attachments()}


def free_port() -> int:
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
        self.received.append(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "raw": raw,
                "message": email.message_from_bytes(raw, policy=policy.default),
            }
        )
        return "250 2.0.0 Message accepted for delivery"


class SmtpServer:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.handler = RecordingSmtpHandler()
        self.controller = None

    def start(self) -> SmtpServer:
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


def pdf_text(pdf: bytes) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


# ----------------------------------------------------------------------------------------------
# Waiting


def wait_until(predicate, what: str, timeout: float = 60.0):
    """Poll ``predicate`` until it returns something true (returned), or fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ----------------------------------------------------------------------------------------------
# A clearance worker in this process (under the session's Prefect test harness)


def fresh_deployments(*entrypoints: tuple[str, str]) -> tuple[str, dict]:
    """The given deployments (name, entrypoint; default: the clearance deployment of prefect.yaml) attached to a work
    pool of their own that no worker serves yet: (pool name, name -> deployment id). What the commands find when
    they run with no `customs serve` (they then run a worker of their own)."""
    from prefect.client.orchestration import get_client

    from customs.orchestration.deployments import DeploymentSpec, read_deployments, register_deployments
    from customs.orchestration.pool import ensure_pool, read_pool

    pool_name = f"test-{uuid.uuid4().hex[:8]}"  # other tests' scheduled runs never reach this pool's worker
    with get_client(sync_client=True) as client:
        ensure_pool(client, read_pool(name=pool_name))
    if entrypoints:
        specs = [DeploymentSpec(name, entrypoint, "", (), {}, (), "clearance") for name, entrypoint in entrypoints]
    else:
        specs = [s for s in read_deployments() if s.name == "clearance"]
    deployments = {name: deployment_id for name, (deployment_id, _) in register_deployments(specs, work_pool=pool_name).items()}
    return pool_name, deployments


@contextlib.contextmanager
def clearance_worker(*entrypoints: tuple[str, str], limit: int = 4, **worker_options):
    """A ClearanceWorker in a thread, serving a work pool of its own to which the given deployments (name,
    entrypoint) are attached (default: the clearance deployment of prefect.yaml). Yields (worker, name ->
    deployment id); the worker is stopped afterwards."""
    from customs.orchestration.worker import ClearanceWorker, WorkerThread

    pool_name, deployments = fresh_deployments(*entrypoints)
    options = {"poll_seconds": 0.2, "run_heartbeat_seconds": 1, "reconcile_seconds": 1} | worker_options
    runner = WorkerThread(ClearanceWorker(pool_name, limit=limit, **options))
    worker = runner.start()
    try:
        yield worker, deployments
    finally:
        runner.stop(30)


# ----------------------------------------------------------------------------------------------
# A TCP forwarder: another host's view of a service that listens on loopback, with a valve to stall it


class TcpProxy:
    """Forwards connections accepted on ``(host, port)`` to ``(target_host, target_port)``, in a thread.

    ``stall()`` holds every byte in both directions (a host whose network is in trouble) until ``flow()``;
    a client that goes away (killed) has its upstream connection closed, so the server rolls back."""

    def __init__(self, host: str, target_port: int, *, target_host: str = "127.0.0.1", port: int = 0):
        import asyncio
        import threading

        self.host, self.port, self.target = host, port, (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._open: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"proxy-{host}", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)
        self._open = asyncio.Event()
        self._open.set()
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, self.host, self.port))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader, writer) -> None:
        import asyncio

        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pump(source, sink):
            try:
                while data := await source.read(65536):
                    await self._open.wait()
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def flow(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


class TcpGate:
    """A TCP forwarder on a port of its own, in front of a real server, that can be closed (connections
    refused, open ones cut: the server is "away") and opened again on the same port (it is "back")."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = __import__("threading").Lock()

    def open(self) -> TcpGate:
        import threading

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    """An ASGI HTTP scope for calling the app straight through its interface (no client in between)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }


@contextlib.contextmanager
def served_api(app):
    """``app`` under uvicorn on a free loopback port, in a thread: an httpx client speaking real HTTP to it."""
    import threading

    import httpx
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the API to listen", 20)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


class SilentListener:
    """A TCP port that accepts connections and never says a word (a hung server)."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]

    def close(self) -> None:
        self.socket.close()


# ----------------------------------------------------------------------------------------------
# Officials' signed acts


class OfficialKeys:
    """The officials of reference/officials.json with NCA employee certificates of the session's test PKI (RSA, or
    GOST with ``family``), issued on first use; ``act`` drafts an act and signs it as NCALayer would."""

    def __init__(self, pki: TestPki):
        from customs.core.reference import load_reference
        from customs.core.settings import REFERENCE_DIR

        self.pki = pki
        self.reference = load_reference(REFERENCE_DIR)
        self._signers: dict[tuple[str, str], object] = {}
        self._issued: dict[tuple[str, str], object] = {}

    def issued(self, official_id: str, family: str = "rsa"):
        key = (official_id, family)
        if key not in self._issued:
            official = self.reference.officials[official_id]
            self._issued[key] = self.pki.issue_official(official, self.reference.authority, family=family)
        return self._issued[key]

    def cli_options(self, official_id: str, family: str = "rsa") -> list[str]:
        """The CLI's options that sign an act here with the official's key, as `customs decide ... --official` takes."""
        issued = self.issued(official_id, family)
        chain = str(self.pki.issuing_cert_path_of(family))
        return ["--official", official_id, "--key", str(issued.key_path), "--cert", str(issued.cert_path), "--chain", chain]

    def signer(self, official_id: str, family: str = "rsa"):
        from customs.pki.testing import CmsSigner

        key = (official_id, family)
        if key not in self._signers:
            issued = self.issued(official_id, family)
            self._signers[key] = CmsSigner(issued.cert_path, issued.key_path, (self.pki.issuing_cert_path_of(family),))
        return self._signers[key]

    def act(
        self,
        kind: str,
        official_id: str,
        declaration_key: str | None = None,
        *,
        family: str = "rsa",
        signed_by=None,
        now=None,
        subject: dict | None = None,
        choice: dict | None = None,
        grounds: list[str] | None = None,
        text: str = "",
    ):
        """The act ``kind`` of ``official_id`` (on the declaration ``declaration_key``), signed with that official's
        key, or with ``signed_by`` (a CmsSigner: someone else's key, a revoked one...)."""
        from customs.services.official_acts import SignedAct, draft_act

        document = draft_act(
            kind,
            official_id=official_id,
            declaration_key=declaration_key,
            subject=subject,
            choice=choice,
            grounds=grounds,
            text=text,
            now=now,
        )
        signer = signed_by or self.signer(official_id, family)
        return SignedAct(document, signer.sign(document))

    def decision(self, key: str, decision: str, official_id: str, *, code: str | None = None, grounds=(), text="", **kw):
        choice = {"decision": decision} | ({"decision_code": code} if code else {})
        return self.act("decide", official_id, key, choice=choice, grounds=list(grounds), text=text, **kw)


def signed_act_over_http(post, headers: dict, signer, act: str, declaration: str, **fields) -> dict:
    """As an officials' page does it: the API drafts the act (``post`` is httpx.post bound to the API's base URL, or
    a test client's post), NCALayer signs its bytes, and both go back in base64 as the act endpoints take them."""
    import base64

    draft = post("/v1/official-acts/draft", json={"act": act, "declaration": declaration, **fields}, headers=headers)
    assert draft.status_code == 200, draft.text
    document = base64.b64decode(draft.json()["document"])
    return {"act": draft.json()["document"], "signature": base64.b64encode(signer.sign(document)).decode()}
