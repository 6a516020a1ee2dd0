"""Reports to the support service when the information system fails (not the declarant).

The rules require the report to carry: the name of the state service, the application's registration
number, the applicant's IIN or BIN, the applicant's name, a description of the error, and screenshots.
Here the screenshots are the failed run's log and a rendering of the declaration's state at the time
of the failure. The report goes to the support address through the outbox at once, and the applicant's
notice that the failure was reported is queued in the same transaction as the audit event that records it.

A failure the system may heal by itself (``hold``: a database error the reconciler will re-run) is not told
to the applicant at once: the notice is held for ``failure_notice_grace`` and withdrawn when the clearance
gets through its steps again meanwhile, or when the declaration moved on (see customs.services.outbox). A
later failure of the same declaration supersedes a notice still held, so the applicant hears of a failure
once, when automatic recovery has given up (the last attempt's failure is told at once).
"""

from __future__ import annotations

import logging
import secrets
import traceback
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import select

from customs.core.clock import kz_local, utcnow
from customs.core.db import find_declaration, transaction
from customs.core.settings import Settings, get_settings
from customs.notices.render import SERVICE_NAMES
from customs.notices.reports import render_state, state_snapshot
from models.audit import AuditEvent, append_event
from models.outbox import DeliveryAttempt, Notice, NoticeKind, NoticeStatus, addressee_of, queue_notice

LOG_FORMAT = "%(asctime)s %(levelname)-8s %(name)s | %(message)s"
MAX_LOG_BYTES = 2 * 1024 * 1024


class RunLogCapture(logging.Handler):
    """Keeps the log records of one flow run (its own and its task runs') for the support report."""

    LOGGERS = ("prefect.flow_runs", "prefect.task_runs")

    def __init__(self, flow_run_id: str | None):
        super().__init__(level=logging.DEBUG)
        self.flow_run_id = flow_run_id
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if self.flow_run_id is not None and str(getattr(record, "flow_run_id", "")) != self.flow_run_id:
            return
        try:
            self.lines.append(self.format(record))
        except Exception:  # pragma: no cover - a log line must never break the run
            pass

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def __enter__(self) -> RunLogCapture:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc_info) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


def describe_error(step: str, error: BaseException | str) -> str:
    if isinstance(error, BaseException):
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return f"The clearance step '{step}' failed after its retries.\n\n{type(error).__name__}: {error}\n\n{trace}"
    return error  # already described by the caller


def new_report_id(now: datetime) -> str:
    return f"SR{kz_local(now):%y%m%d}-{secrets.token_hex(4).upper()}"


@dataclass(frozen=True)
class FailureReport:
    report_id: str
    created: bool  # False when this failure had been reported already


def report_system_failure(
    application_id: str,
    *,
    step: str,
    error: BaseException | str,
    run_log: str,
    flow_run_id: str | None = None,
    run_count: int = 1,
    now: datetime | None = None,
    settings: Settings | None = None,
    hold: bool = False,
) -> FailureReport:
    """Queue the support report and the applicant's notice, and audit the failure: one transaction, once per run and step.
    ``hold``: the system may heal this failure by itself; the applicant's notice waits (see the module)."""
    settings = settings or get_settings()
    now = now or utcnow()
    dedup = f"support_report:{application_id}:{flow_run_id or now.isoformat()}:{run_count}:{step}"
    with transaction(settings) as session:
        existing = session.exec(select(Notice).where(Notice.dedup_key == dedup)).first()
        if existing is not None:
            return FailureReport(existing.facts["report_id"], created=False)
        declaration = find_declaration(session, application_id)
        events = list(
            session.exec(select(AuditEvent).where(AuditEvent.application_id == application_id).order_by(AuditEvent.seq))
        )
        report_id = new_report_id(now)
        who = addressee_of(declaration.content)
        log_bytes = run_log.encode("utf-8")[-MAX_LOG_BYTES:]
        attachments = [
            ("run-log.txt", "text/plain", log_bytes),
            ("declaration-state.html", "text/html", render_state(state_snapshot(declaration, events), report_id).encode("utf-8")),
        ]
        event = append_event(
            session,
            application_id=application_id,
            office=declaration.customs_office,
            event="failure_reported",
            actor="system",
            at=now,
            details={
                "report_id": report_id,
                "step": step,
                "flow_run_id": flow_run_id,
                "error": type(error).__name__ if isinstance(error, BaseException) else "error",
                **({"declarant_told_after": (now + settings.failure_notice_grace).isoformat()} if hold else {}),
            },
        )
        _withdraw_held(session, application_id, now, f"superseded by the report of a later failure, {report_id}")
        facts = {
            "event_at": now.isoformat(),
            "registration_number": declaration.registration_number,
            "report_id": report_id,
            "failed_step": step,
            "flow_run_id": flow_run_id,
            "occurred_at": now.isoformat(),
            "error_description": describe_error(step, error)[:20000],
            "attachments": [name for name, _, _ in attachments],
            "service_name": SERVICE_NAMES[settings.support_language],
        }
        queue_notice(
            session,
            application_id=application_id,
            kind=NoticeKind.SUPPORT_REPORT,
            dedup_key=dedup,
            recipient=settings.support_address,
            language=settings.support_language,
            facts=facts,
            at=now,
            event_seq=event.seq,
            attachments=attachments,
        )
        queue_notice(
            session,
            application_id=application_id,
            kind=NoticeKind.FAILURE_REPORTED,
            dedup_key=f"failure_reported:{application_id}:{report_id}",
            recipient=who["email"],
            language=who["language"],
            facts={
                "event_at": now.isoformat(),
                "report_id": report_id,
                "failed_step": step,
                "registration_number": declaration.registration_number,
                **(
                    {
                        "held_until": (now + settings.failure_notice_grace).isoformat(),
                        "status_at_failure": str(declaration.status),
                    }
                    if hold
                    else {}
                ),
            },
            at=now,
            event_seq=event.seq,
            due=now + settings.failure_notice_grace if hold else None,
        )
        return FailureReport(report_id, created=True)


def _withdraw_held(session, application_id: str, now: datetime, why: str) -> int:
    """Withdraw the applicant's failure notices of this declaration that are still held (never tried)."""
    held = session.exec(
        select(Notice)
        .where(
            Notice.application_id == application_id,
            Notice.kind == NoticeKind.FAILURE_REPORTED,
            Notice.status == NoticeStatus.PENDING,
            Notice.attempts == 0,
        )
        .with_for_update()
    ).all()
    count = 0
    for notice in held:
        if "held_until" not in notice.facts:
            continue
        withdraw_notice(session, notice, now, why)
        count += 1
    return count


def withdraw_notice(session, notice: Notice, now: datetime, why: str) -> None:
    notice.status = NoticeStatus.WITHDRAWN
    notice.last_error = f"withdrawn: {why}"[:2000]
    session.add(notice)
    session.add(DeliveryAttempt(notice_id=notice.id, attempt=notice.attempts, at=now, outcome="withdrawn", detail=why[:2000]))


def withdraw_healed_failure_notices(
    application_id: str, why: str, *, now: datetime | None = None, settings: Settings | None = None
) -> int:
    """The clearance got through its steps again after a failure: the applicant's notices of it still held are not sent."""
    with transaction(settings) as session:
        return _withdraw_held(session, application_id, now or utcnow(), why)


# ----------------------------------------------------------------------------------------------
# Failures that could not be reported because the database was away: kept on this host's disk, reported later


def _spool_dir(settings: Settings):
    return settings.data_dir / "support-spool"


def spool_failure(
    application_id: str,
    *,
    step: str,
    error: str,
    run_log: str,
    flow_run_id: str | None,
    run_count: int,
    now: datetime | None = None,
    settings: Settings | None = None,
    hold: bool = False,
) -> str:
    """Keep a failure whose report could not be queued (the database was away) in a file of this host, written
    atomically; ``report_spooled_failures`` reports it when the database is back (once: the report's dedup key)."""
    import json
    import os
    import tempfile

    settings = settings or get_settings()
    now = now or utcnow()
    folder = _spool_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "application_id": application_id,
        "step": step,
        "error": error,
        "run_log": run_log[-MAX_LOG_BYTES:],
        "flow_run_id": flow_run_id,
        "run_count": run_count,
        "at": now.isoformat(),
        "hold": hold,
    }
    name = f"{now:%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}.json"
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(record, handle, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, folder / name)
    except BaseException:
        with __import__("contextlib").suppress(OSError):
            os.unlink(temporary)
        raise
    return str(folder / name)


def report_spooled_failures(settings: Settings | None = None) -> list[str]:
    """Report what ``spool_failure`` kept, oldest first; stops at the first that still cannot be reported.
    Returns the report ids made."""
    import json

    settings = settings or get_settings()
    folder = _spool_dir(settings)
    if not folder.is_dir():
        return []
    reported = []
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        report = report_system_failure(
            record["application_id"],
            step=record["step"],
            error=record["error"],
            run_log=record["run_log"],
            flow_run_id=record["flow_run_id"],
            run_count=record["run_count"],
            now=datetime.fromisoformat(record["at"]),
            settings=settings,
            hold=record.get("hold", False),
        )
        path.unlink()
        reported.append(report.report_id)
    return reported
