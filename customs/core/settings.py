"""All settings in one place (environment prefix ``CUSTOMS_``)."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from customs.core.paths import REFERENCE_DIR

# Who the letters are from, in each letter's language (the authority named at the head of every notice).
MAIL_FROM_NAMES = {
    "kk": "ҚР мемлекеттік кірістер органдары",
    "ru": "Органы государственных доходов РК",
    "en": "State Revenue Authorities of Kazakhstan",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CUSTOMS_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Where the SQLite database, the Prefect home and the demo PKI live.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the application database; default: SQLite file customs.db under data_dir. "
        "postgresql://user@host/db is accepted and uses psycopg 3.",
    )
    database_idle_transaction_timeout: timedelta = Field(
        timedelta(seconds=60),
        description="PostgreSQL ends a transaction left idle this long (its process stalled or died), releasing its locks.",
    )
    reference_dir: Path = Field(REFERENCE_DIR, description="Offices, zones and risk profiles (JSON data files).")

    trust_dir: Path | None = Field(None, description="Directory of trusted root and intermediate CA certificates (PEM or DER).")
    crl_dir: Path | None = Field(None, description="Directory of CRLs (PEM or DER) of the trusted CAs.")
    require_non_repudiation: bool = Field(
        True, description="Require nonRepudiation in the signer's keyUsage (NCA SIGN certificates)."
    )
    require_crl: bool = Field(True, description="Refuse a signature whose issuing CA has no CRL in crl_dir (fail closed).")
    official_act_max_age: timedelta = Field(
        timedelta(minutes=10),
        description="An official's signed act is taken within this time of its signing (its `at`), then it is stale: "
        "a signature kept for later cannot decide anything.",
    )

    authority_cert: Path | None = Field(
        None,
        description="The authority's service certificate (PEM): a legal entity certificate of the authority's BIN "
        "(reference/officials.json), no IIN, SIGN usage; it signs decision.json and the paper copies. Unset: they go "
        "out unsigned (one warning at start).",
    )
    authority_key: Path | None = Field(
        None,
        description="Its private key (PEM; GOST in the test PKI format); mode 0600: refused when group or others may read it.",
    )
    authority_chain: Path | None = Field(
        None, description="CA certificates (PEM) put into the signatures with the service certificate (its issuing CA)."
    )
    public_base_url: str | None = Field(
        None,
        description="Where people reach the API from outside: the paper copy's QR code leads to "
        "<public_base_url>/v1/documents/check; default http://<api_host>:<api_port>.",
    )

    max_declaration_bytes: int = Field(
        5 * 1024 * 1024, gt=0, description="Intake limit: the largest declaration document, in bytes (5 MiB)."
    )
    max_attachment_bytes: int = Field(
        20 * 1024 * 1024, gt=0, description="Intake limit: the largest attachment, in bytes (20 MiB)."
    )
    max_attachments: int = Field(50, gt=0, description="Intake limit: the most attachments one submission may carry.")
    max_applications_per_declaration: int = Field(
        5,
        gt=0,
        description="Applications made of the same declaration bytes: the first, and new ones after each refusal "
        "for signatures alone (customs.rules.resubmission).",
    )

    registration_deadline: timedelta = Field(
        timedelta(hours=2), description="EAEU: registration or refusal within 2 hours of submission."
    )
    release_deadline: timedelta = Field(timedelta(hours=4), description="EAEU art. 119: release within 4 hours of registration.")
    release_alert_fraction: float = Field(
        0.75, gt=0, lt=1, description="Supervisors are alerted when this share of the release time has passed."
    )
    release_mark_overdue: timedelta = Field(
        timedelta(hours=2), description="A release mark not affixed after this long shows in the operations summary."
    )
    print_deadline: timedelta = Field(
        timedelta(minutes=30), description="A paper copy is printed within this time of the request (2024 order)."
    )
    print_alert_after: timedelta = Field(
        timedelta(minutes=20), description="Supervisors are alerted when a request is this old and not printed."
    )
    print_render_timeout: timedelta = Field(
        timedelta(minutes=10),
        description="Rendering one paper copy (in a process of its own) is stopped after this long and tried again.",
    )
    print_render_attempts: int = Field(3, gt=0, description="Renderings of one copy tried before a person is needed.")
    print_render_processes: int = Field(
        2,
        gt=0,
        description="Processes that render paper copies, per worker process. Waiting copies are taken the most urgent, "
        "then the fewest goods items, first; large copies may hold all of them but one, kept for small copies.",
    )
    print_large_copy_items: int = Field(
        100,
        gt=0,
        description="A paper copy with more goods items than this is large: it may not take the last free renderer.",
    )
    decision_wait_after_deadline: timedelta = Field(
        timedelta(hours=24),
        description="How long a flow run keeps waiting for a supervisor's late decision after the release deadline.",
    )
    decision_poll_seconds: float = Field(
        5.0,
        gt=0,
        description="Unused: a run waiting for an official is Suspended and woken by the decision (issue 24); still read, so "
        "configurations that set it keep loading.",
    )

    # E-mail (the outbox dispatcher). With no smtp_host the notices are written as .eml files under outbox_dir.
    smtp_host: str | None = Field(None, description="SMTP server; unset: write notices as .eml files to outbox_dir instead.")
    smtp_port: int | None = Field(None, description="SMTP port; default 465 for implicit TLS, 587 for STARTTLS, 25 otherwise.")
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        "none", description="none, starttls (upgrade after connect) or tls (implicit TLS)."
    )
    smtp_username: str | None = Field(None, description="Login name at the SMTP server; unset: no login.")
    smtp_password: SecretStr | None = Field(
        None, description="Password of that login (a secret: hidden when settings are printed)."
    )
    smtp_timeout: float = Field(15.0, gt=0, description="Seconds to wait for the SMTP server at each step.")
    smtp_timeout_in_clearance: float = Field(
        3.0,
        gt=0,
        description="The same, for notices sent by a clearance run itself: a slow SMTP server must not hold it up "
        "(what cannot go at once waits for outbox-dispatch).",
    )
    smtp_pause_after_failure: timedelta = Field(
        timedelta(seconds=60),
        description="After the SMTP server failed as a whole, clearance runs leave their notices to outbox-dispatch "
        "for this long.",
    )
    smtp_ca_file: Path | None = Field(
        None, description="CA bundle to verify the SMTP server's certificate (default: the system's)."
    )
    mail_from: str = Field(
        "noreply@customs.kgd.gov.kz",
        description="Address of the From: of every notice, and the envelope sender (a display name written here is "
        "not shown: the name follows the notice's language, see mail_from_names).",
    )
    mail_from_names: dict[Literal["kk", "ru", "en"], str] = Field(
        default_factory=lambda: dict(MAIL_FROM_NAMES),
        description="Display name of the From: of a notice in each language (JSON object; a language not given "
        "keeps its default).",
    )
    mail_domain: str = Field("customs.kgd.gov.kz", description="Right-hand side of the stable Message-IDs of notices.")
    support_address: str = Field(
        "support@customs.kgd.gov.kz", description="Where reports of system failures go (the support service)."
    )
    support_language: Literal["kk", "ru", "en"] = Field("ru", description="Language of the reports to the support service.")
    ops_address: str = Field(
        "ops@customs.kgd.gov.kz",
        description="The operations mailbox: a copy of every report of a failed or crashed clearance run (the automations).",
    )
    ops_alert_token: SecretStr | None = Field(
        None,
        description="Bearer token Prefect's automations present to POST /v1/ops/alerts; default: a random one kept in "
        "data_dir/ops-alert-token (mode 0600), created on first need. Set it when `customs deploy` runs on another host.",
    )
    ops_alert_url: str | None = Field(
        None,
        description="Where the Prefect server calls the intake API's /v1/ops/alerts; default "
        "http://<api_host>:<api_port>/v1/ops/alerts (127.0.0.1 when the API listens on every address).",
    )
    job_gate_seconds: float = Field(
        60.0,
        gt=0,
        description="How often each clearance worker looks whether deadline-watch, outbox-dispatch or print-deadlines "
        "has something to do (a run is created only then, or when its periodic duty is due).",
    )
    job_idle_interval: timedelta = Field(
        timedelta(minutes=15),
        description="A gated job runs at least this often even with nothing to do (the audit anchor, the summaries).",
    )
    outbox_dir: Path | None = Field(
        None, description="Where .eml files go when no SMTP server is configured; default data_dir/outbox."
    )
    failure_notice_grace: timedelta = Field(
        timedelta(minutes=15),
        description="A declarant's notice of a failed step that the system may heal by itself (a database error, "
        "re-run by the reconciler) is held this long, and withdrawn if the declaration moves on meanwhile.",
    )
    health_min_free_mb: int = Field(
        200,
        ge=0,
        description="Readiness is degraded when the disk of the data or outbox folder has less free space than this (MiB).",
    )
    outbox_batch_size: int = Field(100, gt=0, description="Notices claimed by one dispatcher pass.")
    outbox_lease: timedelta = Field(
        timedelta(minutes=10), description="How long a claimed notice is reserved for the dispatcher sending it."
    )
    outbox_backoff: timedelta = Field(
        timedelta(seconds=30), description="Delay after the first temporary failure; doubles each time."
    )
    outbox_backoff_cap: timedelta = Field(timedelta(hours=1), description="Longest delay between two attempts.")
    outbox_max_attempts: int = Field(
        12, gt=0, description="Attempts before a notice that keeps failing temporarily is marked failed."
    )

    # Running as a service (customs serve)
    api_host: str = Field("127.0.0.1", description="Address the intake HTTP API listens on.")
    api_port: int = Field(8080, description="Port of the intake HTTP API.")
    api_max_verify_bytes: int = Field(
        32 * 1024 * 1024,
        gt=0,
        description="The largest body of POST /v1/documents/verify (a document and its signature, base64 or multipart).",
    )
    api_max_request_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Largest HTTP request body accepted for a submission (413 above)."
    )
    api_max_concurrent_submissions: int = Field(
        4,
        gt=0,
        description="Submissions (and verifications) read and decoded at once by one API process, each once its body "
        "has all arrived; the others wait, their bodies in temporary files (memory stays bounded by this times "
        "api_max_request_bytes and its decoding; a slow sender holds no place).",
    )
    api_max_action_bytes: int = Field(
        64 * 1024,
        gt=0,
        description="Largest body of any other request: a decision, cancellation, release mark or print request (413 above).",
    )
    api_header_seconds: float = Field(
        10.0,
        gt=0,
        description="A connection whose request line and headers have not all arrived this many seconds after it "
        "opened (or after its previous answer) gets 408 REQUEST_TIMEOUT and is closed.",
    )
    api_body_seconds: float = Field(
        300.0,
        gt=0,
        description="The longest a request body may take to arrive, however fast it flows: 408 REQUEST_TIMEOUT after "
        "(a 64 MiB submission must come at 220 KiB/s or more).",
    )
    api_body_idle_seconds: float = Field(
        15.0,
        gt=0,
        description="The longest pause in a request body (and the time its first bytes may take): 408 REQUEST_TIMEOUT after.",
    )
    api_body_min_bytes_per_second: int = Field(
        16 * 1024,
        gt=0,
        description="After its first api_body_idle_seconds a body must have come at this rate on average "
        "(1 byte every 2 s is cut there): 408 REQUEST_TIMEOUT below.",
    )
    api_body_memory_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="A body is received in memory up to this size, in a temporary file beyond (it is read and decoded "
        "once it has all arrived, api_max_concurrent_submissions at a time).",
    )
    api_max_connections: int = Field(
        1000,
        gt=0,
        description="Connections and requests the API process holds at once; beyond, uvicorn answers 503 at once.",
    )
    api_client_concurrent_submissions: int = Field(
        4,
        gt=0,
        description="Submissions and verifications one API client may have in progress at once in one API process "
        "(429 TOO_MANY_AT_ONCE above, before the body is read).",
    )
    api_client_submissions_per_minute: int = Field(
        120,
        gt=0,
        description="Submissions and verifications one API client may start in any 60 seconds in one API process "
        "(429 TOO_MANY_PER_MINUTE above).",
    )
    api_client_bytes_per_day: int = Field(
        4 * 1024**3,
        gt=0,
        description="Request body bytes one API client may send in submissions and verifications per Kazakhstan "
        "calendar day, counted in the database (all processes, across restarts): 429 DAILY_BYTES_EXCEEDED above, "
        "before the body is read when its Content-Length already says so.",
    )
    worker_pool: str = Field("customs", description="The Prefect work pool the deployments are attached to and the workers poll.")
    worker_concurrency: int = Field(16, gt=0, description="Flow runs one worker process executes at once (threads).")
    worker_poll_seconds: float = Field(0.5, gt=0, description="How often a worker asks its work pool for runs to execute.")
    worker_prefetch_seconds: float = Field(
        2.0, ge=0, description="A worker claims runs scheduled this far ahead (they wait for their time in the worker)."
    )
    worker_heartbeat_seconds: float = Field(
        10.0, gt=0, description="How often a worker emits the heartbeat of each run it holds (from claim to end)."
    )
    worker_heartbeat_timeout: timedelta = Field(
        timedelta(seconds=60),
        description="A run whose heartbeats stop this long is marked Crashed by the automation customs serve creates "
        "(its worker died); it must be well above worker_heartbeat_seconds.",
    )
    worker_reconcile_seconds: float = Field(
        15.0, gt=0, description="How often each worker looks for crashed clearance runs to run again."
    )
    project_check_seconds: float = Field(
        60.0,
        gt=0,
        description="How often each clearance host (customs serve, customs worker) checks that the work pool, its "
        "queues, the deployments, their schedules and the automations are on the Prefect server, re-creating what "
        "is missing (a Prefect database lost); every 5 s while the Prefect server does not answer.",
    )
    reconcile_max_attempts: int = Field(
        3,
        gt=0,
        description="A clearance run that crashed this many times is left for a person (customs rerun) instead of re-run.",
    )
    reconcile_after: timedelta = Field(
        timedelta(minutes=10),
        description="A clearance run still pending, running or paused this long after its declaration became final is closed.",
    )
    recheck_stuck_after: timedelta = Field(
        timedelta(minutes=10), description="A declaration resting this long in a passing status is stuck."
    )
    recheck_batch_size: int = Field(5000, gt=0, description="Declarations read per batch by batch-recheck.")
    registration_alert_fraction: float = Field(
        0.75, gt=0, lt=1, description="Operations are alerted when this share of the registration time has passed."
    )
    crl_urls: list[str] = Field(
        default_factory=list, description="CRLs to download into crl_dir every hour (JSON list of http(s) URLs)."
    )
    crl_download_timeout: float = Field(30.0, gt=0, description="Seconds to wait for one CRL download.")
    audit_anchor_file: Path | None = Field(
        None,
        description="The append-only file of signed audit chain heads (one JSON line per anchor); default "
        "data_dir/audit-anchors.jsonl. Its public key is written next to it (audit-anchors.pub.pem).",
    )
    audit_anchor_key_file: Path | None = Field(
        None,
        description="The service's Ed25519 key that signs the anchors, created on first need with mode 0600; "
        "default data_dir/audit-anchor-key.pem. A key file that group or others may read is refused.",
    )
    audit_anchor_interval: timedelta = Field(
        timedelta(minutes=15),
        description="deadline-watch writes an anchor when none was written in the current interval (15 min: at :00, "
        ":15, ...), new events or not; between those, every job gate pass (CUSTOMS_JOB_GATE_SECONDS, a minute) anchors "
        "the chains when they grew, so at most a minute of events is unanchored.",
    )
    sent_journal_dir: Path | None = Field(
        None,
        description="The sent journal (customs.core.sent_journal): every registration number issued and every notice "
        "sent, outside the database, so that a database restored from a backup never issues a number or sends a "
        "notice twice; default data_dir/sent-journal. Put it on another disk than the database (each host writes its "
        "own file in it; a folder shared by the hosts lets each see the others').",
    )
    backup_dir: Path | None = Field(
        None, description="Where `customs backup create` writes its backups; default data_dir/backups (best another disk)."
    )
    audit_anchor_required: bool = Field(
        True,
        description="customs audit verify fails when the database holds audit events and the anchors cannot be "
        "checked: the anchor file or the anchor key is missing, or no key to check them with (a database with no "
        "events yet passes). False (a development database only): anchors are checked only where they exist.",
    )
    audit_anchor_public_key: str | None = Field(
        None,
        description="The anchors' public key, pinned: its PEM (-----BEGIN PUBLIC KEY-----...) or the SHA-256 of the "
        "raw Ed25519 key in hex (what customs serve and customs audit anchor print). customs audit verify checks the "
        "anchors with it and fails on a key file that differs; anchoring refuses a key that differs, and makes no "
        "new key when the pinned one's is missing. Unset: the key beside the anchors is trusted (a warning).",
    )
    audit_anchor_copy_dir: Path | None = Field(
        None,
        description="A second place every anchor line is appended to (fsynced), away from this machine (another "
        "disk, a mount of another host): the file of the same name as the anchor file in this directory. customs "
        "audit verify compares the anchors with it, so anchors cut from or rewritten in the local file are seen.",
    )

    prefect_api_url: str | None = Field(
        None, description="Prefect API to record flow runs in; default: the local server the CLI starts under data_dir."
    )
    prefect_auth_string: SecretStr | None = Field(
        None,
        description="The login of the Prefect server and UI, `user:password` (Prefect's basic authentication): the "
        "local server demands it (PREFECT_SERVER_API_AUTH_STRING) and every client of this project presents it "
        "(PREFECT_API_AUTH_STRING): the CLI, the workers, the intake API, the background clearance processes. "
        "Unset: a random one, `customs:<32 characters>`, kept in data_dir/prefect-auth (mode 0600), made on first "
        "need; ops staff type that whole line into the UI's login. Set it on every host whose processes use a "
        "Prefect API run elsewhere (CUSTOMS_PREFECT_API_URL). An empty string turns the login off, which is "
        "refused for a server listening on anything but a loopback address.",
    )
    prefect_port: int = Field(4200, description="Port of the local Prefect server started by the CLI.")
    prefect_host: str = Field(
        "127.0.0.1", description="Address the local Prefect server listens on (another host's workers need one they reach)."
    )
    prefect_ha_ports: list[int] = Field(
        default_factory=lambda: [4200, 4201],
        description="Ports of the API processes of the high-availability Prefect server (customs server start --ha).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis of the high-availability Prefect server (messaging, ordering, leases)."
    )
    prefect_ha: bool = Field(
        False,
        description="The Prefect API is the high-availability server (customs server start --ha): readiness also "
        "checks its Redis (CUSTOMS_REDIS_URL), without which it answers 500.",
    )
    prefect_database_url: str | None = Field(
        None,
        description="Database of the local Prefect server; default SQLite under data_dir/prefect. "
        "postgresql://user@host/db uses asyncpg.",
    )

    @model_validator(mode="after")
    def _heartbeat_timeout_above_interval(self) -> Settings:
        if self.worker_heartbeat_timeout.total_seconds() < 2 * self.worker_heartbeat_seconds:
            raise ValueError(
                f"worker_heartbeat_timeout ({self.worker_heartbeat_timeout.total_seconds():g} s) must be at least twice "
                f"worker_heartbeat_seconds ({self.worker_heartbeat_seconds:g} s), "
                "or runs with a live worker would be marked Crashed"
            )
        return self

    @field_validator("mail_from_names")
    @classmethod
    def _every_language_has_a_sender_name(cls, value: dict[str, str]) -> dict[str, str]:
        return {**MAIL_FROM_NAMES, **{k: v for k, v in value.items() if v.strip()}}

    @field_validator("prefect_auth_string")
    @classmethod
    def _login_shape(cls, value: SecretStr | None) -> SecretStr | None:
        text = value.get_secret_value() if value is not None else None
        if text:  # None: generated; "": no login (loopback only, checked when a server starts)
            user, colon, password = text.partition(":")
            if not colon or not user or any(c.isspace() for c in text) or len(password) < 12:
                raise ValueError(
                    "prefect_auth_string must be `user:password` with no spaces and a password of at least 12 "
                    "characters (or unset, for a generated one kept in data_dir/prefect-auth)"
                )
        return value

    @field_validator("audit_anchor_public_key")
    @classmethod
    def _pinned_key(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if value.startswith("-----BEGIN"):
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            try:
                key = serialization.load_pem_public_key(value.encode("ascii"))
            except (ValueError, UnicodeEncodeError) as exc:
                raise ValueError(f"audit_anchor_public_key is not a public key in PEM: {exc}") from None
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("audit_anchor_public_key is not an Ed25519 public key (the anchors are signed with Ed25519)")
            return value
        fingerprint = value.lower().removeprefix("sha256:")
        if len(fingerprint) != 64 or not set(fingerprint) <= set("0123456789abcdef"):
            raise ValueError(
                "audit_anchor_public_key must be the anchors' public key in PEM or its SHA-256 in hex (64 characters), "
                f"got {value[:80]!r}"
            )
        return fingerprint

    @field_validator("audit_anchor_interval")
    @classmethod
    def _positive_interval(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("audit_anchor_interval must be positive")
        return value

    @field_validator(
        "data_dir",
        "reference_dir",
        "trust_dir",
        "crl_dir",
        "outbox_dir",
        "smtp_ca_file",
        "audit_anchor_file",
        "audit_anchor_key_file",
        "audit_anchor_copy_dir",
        "authority_cert",
        "authority_key",
        "authority_chain",
    )
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url or f"sqlite:///{self.data_dir / 'customs.db'}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    @property
    def prefect_sqlalchemy_url(self) -> str | None:
        url = self.prefect_database_url
        if url and (url.startswith("postgresql://") or url.startswith("postgres://")):
            url = "postgresql+asyncpg://" + url.split("://", 1)[1]
        return url

    @property
    def eml_dir(self) -> Path:
        return self.outbox_dir or self.data_dir / "outbox"

    @property
    def anchor_path(self) -> Path:
        return self.audit_anchor_file or self.data_dir / "audit-anchors.jsonl"

    @property
    def anchor_public_key_path(self) -> Path:
        """The anchors' public key, next to them, for a verifier that has no access to the signing key."""
        anchors = self.anchor_path
        return anchors.with_name(anchors.name.removesuffix(".jsonl") + ".pub.pem")

    @property
    def sent_journal_path(self) -> Path:
        return self.sent_journal_dir or self.data_dir / "sent-journal"

    @property
    def backup_path(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def anchor_key_path(self) -> Path:
        return self.audit_anchor_key_file or self.data_dir / "audit-anchor-key.pem"

    @property
    def anchor_copy_path(self) -> Path | None:
        """The copy of the anchor file in CUSTOMS_AUDIT_ANCHOR_COPY_DIR (same name), when one is configured."""
        return self.audit_anchor_copy_dir / self.anchor_path.name if self.audit_anchor_copy_dir else None

    @property
    def ops_alert_endpoint(self) -> str:
        if self.ops_alert_url:
            return self.ops_alert_url
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::", "") else self.api_host
        return f"http://{host}:{self.api_port}/v1/ops/alerts"

    @property
    def public_url(self) -> str:
        """The API's address as people outside reach it (the paper copy's QR code), without a trailing slash."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::", "") else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def demo_pki_dir(self) -> Path:
        return self.data_dir / "demo-pki"


_override: Settings | None = None


@lru_cache(maxsize=1)
def _from_environment() -> Settings:
    return Settings()


def get_settings() -> Settings:
    """The settings in force: an explicit configuration (tests, the demo) or the environment."""
    return _override if _override is not None else _from_environment()


def configure(settings: Settings | None) -> None:
    """Put ``settings`` in force for this process (``None`` goes back to the environment)."""
    global _override
    _override = settings
    _from_environment.cache_clear()
