"""After a restore: the database compared with what the service already announced (the sent journal).

Every host runs ``restore_check`` when it starts (``customs serve``, ``customs worker``), and an operator can run it
any time (``customs backup check``). A database that is behind its journal was restored from a backup (or lost
its last transactions). The check then, in one transaction:

- raises each office's registration counter past every number the journal holds, so no number is issued twice;
- marks sent every pending notice whose Message-ID the journal holds (the outbox checks the journal too, before
  each send, so a notice queued again after the restore under the same dedup key is not sent either);
- lists the declarations the database lost entirely (submitted after the backup), with what their declarants were
  told, for re-entry; and those it holds at an earlier stage than announced (registered again, they keep the
  number they were given: customs.services.steps);
- compares the database with the audit anchors: a database that ends before the anchors without a rewrite is
  reported as restored to anchor N (events after it missing), and, once an operator confirms the restore
  (``record``), gets a signed restore anchor so anchoring and verify go on from it;
- writes the list to ``data_dir/restore-reports/`` and one audit event on the service's chain.

Nothing is deleted or sent by the check. Run on an intact database, it finds nothing and writes nothing.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from customs.core.clock import utcnow
from customs.core.db import transaction
from customs.core.files import private_dir
from customs.core.sent_journal import JournalIndex, announcement_key
from customs.core.settings import Settings, get_settings
from customs.rules.registration import parse_registration_number
from customs.services.audit_anchors import AnchorRefused, record_restore, restore_point
from customs.services.ops_alerts import queue_ops_system_alert
from customs.services.steps import raise_counter
from models.audit import append_event
from models.declaration import Declaration, RegistrationCounter
from models.outbox import Notice, NoticeStatus

log = logging.getLogger(__name__)

CHUNK = 500  # values per IN (...) query


@dataclass
class RestoreReport:
    """What the check found; ``restored`` is True when the database is behind the journal."""

    checked_at: datetime
    journal_records: int = 0
    counters_raised: list[dict[str, Any]] = field(default_factory=list)
    notices_marked_sent: list[dict[str, Any]] = field(default_factory=list)
    lost: list[dict[str, Any]] = field(default_factory=list)
    behind: list[dict[str, Any]] = field(default_factory=list)
    anchors: dict[str, Any] | None = None  # the database was behind the audit anchors: the restore anchor's record
    lost_reported_before: int = 0  # lost declarations an earlier check listed already
    behind_reported_before: int = 0  # of ``behind``, those an earlier check listed already (restarted, not reported)
    report_file: str | None = None

    @property
    def restored(self) -> bool:
        new_behind = len(self.behind) > self.behind_reported_before
        return bool(self.counters_raised or self.notices_marked_sent or self.lost or new_behind or self.anchors)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "restored": self.restored}

    def summary(self) -> str:
        if not self.restored:
            before = "".join(
                f"; {count} {what} declarations listed by an earlier check"
                for count, what in ((self.lost_reported_before, "lost"), (self.behind_reported_before, "behind (cleared again)"))
                if count
            )
            return f"database in step with the sent journal ({self.journal_records} records){before}"
        return (
            f"the database is behind what was announced (restored from a backup?): {len(self.counters_raised)} "
            f"registration counters raised, {len(self.notices_marked_sent)} notices marked sent (not sent again), "
            f"{len(self.lost)} declarations lost (re-entry needed), {len(self.behind)} at an earlier stage than "
            f"announced{'; audit chains ' + self.anchors['described'] if self.anchors else ''}; the list: {self.report_file}"
        )


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    values = sorted(values)
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _raise_counters(session: Session, journal: JournalIndex, report: RestoreReport) -> None:
    wanted: dict[tuple[str, Any], int] = {}
    for number in journal.numbers:
        if (parsed := parse_registration_number(number)) is not None:
            office, day, serial = parsed
            wanted[(office, day)] = max(wanted.get((office, day), 0), serial)
    for (office, day), serial in sorted(wanted.items()):
        current = session.get(RegistrationCounter, (office, day))
        if current is None or current.last_value < serial:
            raise_counter(session, office, day, serial)
            report.counters_raised.append(
                {"office": office, "day": day.isoformat(), "from": current.last_value if current else 0, "to": serial}
            )


def _mark_sent(session: Session, journal: JournalIndex, report: RestoreReport, now: datetime) -> None:
    for uids in _chunks(journal.sent_uids):
        pending = session.exec(select(Notice).where(Notice.uid.in_(uids), Notice.status != NoticeStatus.SENT)).all()
        for notice in pending:
            report.notices_marked_sent.append(
                {
                    "notice": notice.id,
                    "application_id": notice.application_id,
                    "kind": str(notice.kind),
                    "was": str(notice.status),
                }
            )
            notice.status = NoticeStatus.SENT
            notice.sent_at = notice.sent_at or now
            notice.last_error = "sent before the database was restored (sent journal): not sent again"
            session.add(notice)


def _held_notices(session: Session, ids: list[str]) -> set[str]:
    """What the database holds of these declarations' notices: uids, dedup keys and once-per-declaration kinds."""
    held: set[str] = set()
    for chunk in _chunks(ids):
        rows = session.exec(
            select(Notice.uid, Notice.dedup_key, Notice.kind, Notice.application_id).where(Notice.application_id.in_(chunk))
        )
        for uid, key, kind, application_id in rows.all():
            held.update({uid, key, announcement_key(str(kind), application_id) or key})
    return held


def _reported_before(settings: Settings) -> tuple[set[str], set[str]]:
    """Declarations an earlier check already listed as lost (they stay lost until re-entered under a new id) and as
    behind (they stay behind until cleared again: every start restarts them, without a new report each time)."""
    folder = settings.data_dir / "restore-reports"
    lost: set[str] = set()
    behind: set[str] = set()
    for path in sorted(folder.glob("restore-*.json")) if folder.is_dir() else ():
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            lost.update(d["application_id"] for d in report.get("lost", ()))
            behind.update(d["application_id"] for d in report.get("behind", ()))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("restore report %s could not be read", path)
    return lost, behind


def _compare_declarations(session: Session, settings: Settings, journal: JournalIndex, report: RestoreReport) -> None:
    held: dict[str, tuple[str, str | None]] = {}
    for ids in _chunks(journal.declarations):
        rows = session.exec(
            select(Declaration.application_id, Declaration.status, Declaration.registration_number).where(
                Declaration.application_id.in_(ids)
            )
        ).all()
        held.update({row[0]: (str(row[1]), row[2]) for row in rows})
    notices = _held_notices(session, list(held))
    reported, reported_behind = _reported_before(settings)
    for application_id, announced in sorted(journal.declarations.items()):
        if application_id not in held:
            if application_id in reported:
                report.lost_reported_before += 1
            else:
                report.lost.append(announced.as_dict())
            continue
        status, number = held[application_id]
        forgotten = [
            n
            for n in announced.notices
            if not {n.get("uid"), n.get("key"), announcement_key(str(n.get("kind")), application_id)} & notices
        ]
        if (announced.number and number != announced.number) or forgotten:
            report.behind_reported_before += application_id in reported_behind
            report.behind.append(
                {
                    **announced.as_dict(),
                    "status_now": status,
                    "registration_number_now": number,
                    "notices_the_database_forgot": [n.get("kind") for n in forgotten],
                }
            )


def _alert_lines(report: RestoreReport) -> list[str]:
    lines = [f"report: {report.report_file}"]
    if report.anchors:
        lines.append(f"audit chains {report.anchors['described']}")
    lines += [f"lost: {d['application_id']} ({d['registration_number'] or 'no number'})" for d in report.lost[:20]]
    lines += [
        f"behind: {d['application_id']} ({d['status_now']}, announced {d['registration_number']})" for d in report.behind[:20]
    ]
    if report.counters_raised:
        lines.append(f"registration counters raised: {len(report.counters_raised)}")
    if report.notices_marked_sent:
        lines.append(f"notices marked sent, not sent again: {len(report.notices_marked_sent)}")
    return lines


def _write_report(settings: Settings, report: RestoreReport) -> Path:
    folder = private_dir(settings.data_dir / "restore-reports")
    path = folder / f"restore-{report.checked_at:%Y%m%dT%H%M%S%fZ}.json"
    path.write_text(json.dumps(report.as_dict(), ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    return path


def restore_check(*, settings: Settings | None = None, now: datetime | None = None, record: bool = False) -> RestoreReport:
    """Compare the database with the sent journal and the audit anchors, and repair what a restore broke (see the
    module). ``record``: an operator confirmed the restore (``customs backup restore``, ``customs backup check
    --record-restore``): a database behind the audit anchors gets its restore anchor; otherwise it is only reported,
    and anchoring stays stopped until someone looks."""
    settings = settings or get_settings()
    now = now or utcnow()
    journal = JournalIndex(settings.sent_journal_path).refresh()  # a fresh read: the whole journal, not a cache
    report = RestoreReport(checked_at=now, journal_records=journal.records)
    try:
        point = record_restore(settings, now=now) if record else restore_point(settings)
    except AnchorRefused as exc:  # the key is gone or the file damaged: verify says what; the journal's part goes on
        log.error("restore check: the anchors could not record a restore: %s", exc)
        point = None
    if point is not None:
        report.anchors = {**point.as_record(), "described": point.described(), "recorded": record}
    if not journal.records and point is None:
        return report
    with transaction() as session:
        _raise_counters(session, journal, report)
        _mark_sent(session, journal, report, now)
        _compare_declarations(session, settings, journal, report)
        if not report.restored:
            return report
        report.report_file = str(_write_report(settings, report))
        append_event(
            session,
            application_id="-",
            office=None,
            event="restore_detected",
            actor="system",
            at=now,
            details={
                "counters_raised": len(report.counters_raised),
                "notices_marked_sent": len(report.notices_marked_sent),
                "lost": [d["application_id"] for d in report.lost][:200],
                "behind": [d["application_id"] for d in report.behind][:200],
                "report_file": report.report_file,
                "anchors": report.anchors,
            },
        )
        queue_ops_system_alert(
            session,
            settings,
            key=f"restore_detected:{now:%Y%m%dT%H%M%S}",
            what="restore_detected",
            lines=_alert_lines(report),
            noticed_by=f"the restore check of {socket.gethostname()}",
            at=now,
        )
    log.error("restore check: %s", report.summary())
    return report
