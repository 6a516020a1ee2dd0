"""The sent journal: what the service has told the outside world, kept outside its database.

A database restored from a backup forgets what happened after the backup, but the declarants, their banks and
the border posts do not: they hold registration numbers and e-mails the service sent. The journal is the
service's own memory of those announcements, written where a restore of the database does not reach
(``CUSTOMS_SENT_JOURNAL_DIR``; by default ``data_dir/sent-journal``, best on another disk or host):

- ``number``: a registration number, once the registering transaction has committed;
- ``notice``: a notice, once the SMTP server (or the .eml folder) took it, before it is marked sent in the database.

One JSON object per line, appended with ``O_APPEND`` and fsynced. Each host writes its own file
(``<host>.jsonl``), and processes of one host take turns with ``flock``; a reader reads every ``*.jsonl`` in the
folder. A line torn by a crash (no newline at the end) is skipped, and the next append starts a new line.

``JournalIndex`` reads the files incrementally (from where it stopped, when a file grew) and answers what the
start-up check (customs.services.restore) and the outbox (never send again a notice whose Message-ID went out)
need to know.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from customs.core.files import private_dir
from models.outbox import SYSTEM_APPLICATION

log = logging.getLogger(__name__)

NUMBER = "number"
NOTICE = "notice"

# Notices of a state each declaration reaches at most once (models.declaration.TRANSITIONS): after a restore the
# same announcement may be queued again under another dedup key (its audit event's sequence number differs), so
# these are known by kind and declaration.
ONCE_PER_DECLARATION = frozenset(
    {
        "acceptance",
        "registration",
        "registration_refusal",
        "awaiting_official",
        "release",
        "release_refusal",
        "release_cancellation",
    }
)


def announcement_key(kind: str, application_id: str) -> str | None:
    return f"{kind}@{application_id}" if kind in ONCE_PER_DECLARATION else None


def host_file(directory: Path) -> Path:
    """This host's journal file in ``directory``."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname()) or "host"
    return directory / f"{name}.jsonl"


def append(directory: Path, record: dict[str, Any]) -> None:
    """Append one record to this host's file, durably (written and fsynced before returning)."""
    private_dir(directory)
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str) + "\n").encode()
    path = host_file(directory)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:  # a torn last line (a crash mid-write) must not swallow this record
            with open(path, "rb") as existing:
                existing.seek(size - 1)
                if existing.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def number_record(application_id: str, office: str, day: date, serial: int, number: str, at: datetime) -> dict[str, Any]:
    return {
        "type": NUMBER,
        "app": application_id,
        "office": office,
        "day": day.isoformat(),
        "serial": serial,
        "number": number,
        "at": at,
    }


def notice_record(
    *, uid: str, dedup_key: str, application_id: str, kind: str, recipient: str | None, number: str | None, at: datetime
) -> dict[str, Any]:
    return {
        "type": NOTICE,
        "uid": uid,
        "key": dedup_key,
        "app": application_id,
        "kind": kind,
        "to": recipient,
        "number": number,
        "at": at,
    }


@dataclass
class Announced:
    """What the journal says was announced about one declaration."""

    application_id: str
    number: str | None = None
    notices: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "application_id": self.application_id,
            "registration_number": self.number,
            "notices": [{k: n.get(k) for k in ("kind", "to", "at", "uid")} for n in self.notices],
        }


class JournalIndex:
    """The journal folder read into memory, brought up to date by ``refresh()`` (reads only what was appended)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._offsets: dict[str, int] = {}
        self._lock = threading.Lock()
        self.sent_uids: set[str] = set()
        self.sent_keys: set[str] = set()
        self.declarations: dict[str, Announced] = {}
        self.serials: dict[tuple[str, str], int] = {}  # (office, day) -> highest serial announced
        self.numbers: dict[str, str] = {}  # registration number -> application id
        self.records = 0

    def refresh(self) -> JournalIndex:
        with self._lock:
            if not self.directory.is_dir():
                return self
            for path in sorted(self.directory.glob("*.jsonl")):
                self._read(path)
        return self

    def _read(self, path: Path) -> None:
        start = self._offsets.get(path.name, 0)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size < start:  # replaced by a shorter file: read it again from the start
            log.warning("sent journal %s shrank from %d to %d bytes: read again", path, start, size)
            start = 0
        if size == start:
            return
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(size - start)
        end = data.rfind(b"\n") + 1  # an unfinished last line waits for its end (or stays torn)
        for line in data[:end].splitlines():
            self._take(path, line)
        self._offsets[path.name] = start + end

    def _take(self, path: Path, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            if line.strip():
                log.warning("sent journal %s: a line that is not JSON skipped (%d bytes)", path, len(line))
            return
        if not isinstance(record, dict) or not record.get("app"):
            return
        self.records += 1
        if record["app"] == SYSTEM_APPLICATION:  # a letter about the service (to operations), not a declaration
            self.sent_uids.update([record["uid"]] if record.get("uid") else [])
            self.sent_keys.update([record["key"]] if record.get("key") else [])
            return
        announced = self.declarations.setdefault(record["app"], Announced(record["app"]))
        number = record.get("number")
        if number:
            announced.number = announced.number or number
            self.numbers.setdefault(number, record["app"])
        if record.get("type") == NUMBER:
            key = (str(record.get("office")), str(record.get("day")))
            self.serials[key] = max(self.serials.get(key, 0), int(record.get("serial") or 0))
        elif record.get("type") == NOTICE:
            announced.notices.append(record)
            if record.get("uid"):
                self.sent_uids.add(record["uid"])
            if record.get("key"):
                self.sent_keys.add(record["key"])
            if once := announcement_key(str(record.get("kind")), record["app"]):
                self.sent_keys.add(once)

    def was_sent(self, uid: str, dedup_key: str | None, kind: str, application_id: str) -> bool:
        """Whether the journal holds this notice: its uid (the Message-ID), its dedup key, or, for a once-per-declaration
        kind, the same kind for the same declaration."""
        keys = (dedup_key, announcement_key(kind, application_id))
        return uid in self.sent_uids or any(k is not None and k in self.sent_keys for k in keys)


_indexes: dict[Path, JournalIndex] = {}
_indexes_lock = threading.Lock()


def index_of(directory: Path) -> JournalIndex:
    """The process's index of ``directory``, refreshed."""
    with _indexes_lock:
        index = _indexes.setdefault(directory.resolve(), JournalIndex(directory))
    return index.refresh()


def forget_indexes() -> None:
    """Drop the cached indexes (tests that replace a journal folder)."""
    with _indexes_lock:
        _indexes.clear()
