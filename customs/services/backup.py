"""Backups of the application database, with the audit anchors and their key, and their restore.

``create_backup`` writes one folder per backup under ``backup_dir`` (default ``data_dir/backups``):

- the database: SQLite by its online backup API (consistent while the service runs and writes), PostgreSQL by
  ``pg_dump --format=custom`` (one consistent snapshot; for point-in-time recovery use continuous archiving,
  docs/how-to/backup-and-restore.md);
- the audit anchors, their public key and their signing key (0600: the folder is the service's user's only);
- ``manifest.json``: when, what, and the SHA-256 of every file, checked again before a restore.

``restore_backup`` puts the database back (the service stopped), puts back an anchor file or key only where it is
missing (the live ones are newer witnesses), and runs the restore check (customs.services.restore), which uses
the sent journal, never restored, to keep every announced number and notice from being issued again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from customs.core.clock import utcnow
from customs.core.db import dispose_engines
from customs.core.files import private_dir
from customs.core.settings import Settings, get_settings
from customs.services.restore import RestoreReport, restore_check

MANIFEST = "manifest.json"
SQLITE_FILE = "customs.db"
PG_FILE = "customs.pgdump"


class BackupError(RuntimeError):
    """A backup or restore that could not be done; the message says what and where."""


@dataclass
class Backup:
    folder: Path
    manifest: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kind(settings: Settings) -> str:
    return make_url(settings.sqlalchemy_url).get_backend_name()


def _sqlite_path(settings: Settings) -> Path:
    database = make_url(settings.sqlalchemy_url).database
    if not database or database == ":memory:":
        raise BackupError(f"the SQLite database {settings.sqlalchemy_url!r} is not a file: nothing to back up")
    return Path(database)


def _libpq(settings: Settings) -> tuple[str, list[str]]:
    """The libpq URL of the database, and pg_dump's ``--schema`` when the URL pins a search_path."""
    url = make_url(settings.sqlalchemy_url).set(drivername="postgresql")
    schemas: list[str] = []
    options = url.query.get("options", ())
    for option in [options] if isinstance(options, str) else options:
        if "search_path=" in option:
            schemas += [s for s in option.split("search_path=", 1)[1].split(",") if s]
    return url.render_as_string(hide_password=False), [f"--schema={s}" for s in schemas]


def _run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError as exc:
        raise BackupError(f"{what}: {command[0]} is not installed (PostgreSQL's client programs are needed)") from exc
    if done.returncode != 0:
        raise BackupError(f"{what} failed ({command[0]} exit {done.returncode}): {done.stderr.strip()[-2000:]}")


def _key_files(settings: Settings) -> dict[str, Path]:
    return {
        "audit-anchors.jsonl": settings.anchor_path,
        "audit-anchors.pub.pem": settings.anchor_public_key_path,
        "audit-anchor-key.pem": settings.anchor_key_path,
    }


def create_backup(*, settings: Settings | None = None, to: Path | None = None, now: datetime | None = None) -> Backup:
    """Back up the database and the anchors (see the module); returns the folder and its manifest."""
    settings = settings or get_settings()
    now = now or utcnow()
    folder = private_dir((to or settings.backup_path) / f"backup-{now:%Y%m%dT%H%M%SZ}")
    kind = _kind(settings)
    if kind == "sqlite":
        source = _sqlite_path(settings)
        if not source.exists():
            raise BackupError(f"no database at {source}: nothing to back up")
        target = folder / SQLITE_FILE
        live, copy = sqlite3.connect(source), sqlite3.connect(target)
        try:
            live.backup(copy)  # the online backup API: a consistent copy while others write
        finally:
            copy.close()
            live.close()
    elif kind == "postgresql":
        url, schema = _libpq(settings)
        _run(["pg_dump", "--format=custom", "--no-owner", f"--file={folder / PG_FILE}", *schema, url], "pg_dump")
    else:
        raise BackupError(f"backups of a {kind} database are not supported (SQLite or PostgreSQL)")
    files: dict[str, str] = {}
    for name, path in _key_files(settings).items():
        if path.exists():
            shutil.copy2(path, folder / name)
            os.chmod(folder / name, 0o600)
    for path in sorted(folder.iterdir()):
        if path.name != MANIFEST:
            files[path.name] = _sha256(path)
    manifest = {"created_at": now.isoformat(), "database": kind, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return Backup(folder, manifest)


def _checked_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BackupError(f"{folder} is not a backup: it has no {MANIFEST}") from exc
    except ValueError as exc:
        raise BackupError(f"{folder / MANIFEST} is not JSON: {exc}") from exc
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.exists():
            raise BackupError(f"{path} is missing from the backup")
        if _sha256(path) != digest:
            raise BackupError(f"{path} does not match its SHA-256 in {MANIFEST}: the backup was changed or is damaged")
    return manifest


def restore_backup(folder: Path, *, settings: Settings | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Put a backup back (the service must be stopped), then run the restore check; returns what was done."""
    settings = settings or get_settings()
    manifest = _checked_manifest(folder)
    kind = _kind(settings)
    if manifest.get("database") != kind:
        raise BackupError(f"{folder} holds a {manifest.get('database')} database; this service's is {kind}")
    dispose_engines()  # no pooled connection may outlive the database it was opened on
    if kind == "sqlite":
        target = _sqlite_path(settings)
        staged = target.with_name(target.name + ".restoring")
        shutil.copyfile(folder / SQLITE_FILE, staged)
        with open(staged, "rb+") as handle:
            os.fsync(handle.fileno())
        for suffix in ("-wal", "-shm", "-journal"):  # the live database's logs belong to the live database
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        os.replace(staged, target)
    else:
        url, schema = _libpq(settings)
        command = ["pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={url}", *schema, str(folder / PG_FILE)]
        _run(command, "pg_restore")
    kept, put_back = [], []
    for name, path in _key_files(settings).items():
        if not (folder / name).exists():
            continue
        if path.exists():
            kept.append(str(path))  # the live file is the newer witness
        else:
            private_dir(path.parent)
            shutil.copy2(folder / name, path)
            os.chmod(path, 0o600)
            put_back.append(str(path))
    report: RestoreReport = restore_check(settings=settings, now=now, record=True)  # the operator restored it
    return {
        "restored_from": str(folder),
        "backup_created_at": manifest.get("created_at"),
        "database": kind,
        "files_put_back": put_back,
        "files_kept": kept,
        "check": report.as_dict(),
        "summary": report.summary(),
    }


def list_backups(*, settings: Settings | None = None) -> list[dict[str, Any]]:
    settings = settings or get_settings()
    if not settings.backup_path.is_dir():
        return []
    found = []
    for folder in sorted(settings.backup_path.glob("backup-*")):
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        size = sum(p.stat().st_size for p in folder.iterdir())
        found.append(
            {"folder": str(folder), "created_at": manifest.get("created_at"), "database": manifest.get("database"), "bytes": size}
        )
    return found
