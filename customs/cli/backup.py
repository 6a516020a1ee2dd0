"""Backups of the database with the audit anchors and their key; their restore; the check after a restore."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from customs.cli.root import ExitCode, JsonOption, echo_json, fail, prepare_database, table
from customs.services.backup import BackupError, create_backup, list_backups, restore_backup
from customs.services.restore import restore_check

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

backup_app = typer.Typer(
    help="Backups of the database with the audit anchors and their key (docs/how-to/backup-and-restore.md).",
    no_args_is_help=True,
)
commands.add_typer(backup_app, name="backup")


@backup_app.command("create")
def backup_create(
    to: Annotated[
        Optional[Path], typer.Option("--to", help="The folder to write the backup under (default CUSTOMS_BACKUP_DIR).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Back up the database (SQLite online, PostgreSQL by pg_dump) with the anchors and their key, while the service
    runs; prints the backup's folder."""
    prepare_database()
    try:
        made = create_backup(to=to)
    except BackupError as exc:
        fail(str(exc), ExitCode.PROBLEM, as_json=as_json, code="BACKUP_FAILED")
    if as_json:
        echo_json({"folder": str(made.folder), **made.manifest})
    else:
        typer.echo(f"backup written to {made.folder} ({len(made.manifest['files'])} files, SHA-256 in manifest.json)")


@backup_app.command("list")
def backup_list(as_json: JsonOption = False) -> None:
    """The backups in CUSTOMS_BACKUP_DIR, oldest first."""
    found = list_backups()
    if as_json:
        echo_json(found)
        return
    table(
        ("created", "database", "bytes", "folder"),
        ([b["created_at"], b["database"], b["bytes"], b["folder"]] for b in found),
        empty="no backups",
    )


@backup_app.command("restore")
def backup_restore(
    folder: Annotated[Path, typer.Argument(help="A backup's folder (customs backup list).", exists=True, file_okay=False)],
    as_json: JsonOption = False,
) -> None:
    """Put a backup back: stop the service first (customs server stop, and every worker). The anchors and their key are
    put back only where missing. Then the restore check runs (see `customs backup check`)."""
    try:
        done = restore_backup(folder)
    except BackupError as exc:
        fail(str(exc), ExitCode.PROBLEM, as_json=as_json, code="RESTORE_FAILED")
    if as_json:
        echo_json(done)
        return
    typer.echo(f"restored {done['database']} database from {done['restored_from']} (backup of {done['backup_created_at']})")
    for path in done["files_put_back"]:
        typer.echo(f"put back: {path}")
    _print_check(done["check"], done["summary"])


@backup_app.command("check")
def backup_check(
    record_restore: Annotated[
        bool,
        typer.Option(
            "--record-restore",
            help="Confirm that the database was restored from a backup: a database behind the audit anchors gets a "
            "signed restore anchor, and anchoring goes on from it.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Compare the database with the sent journal and the audit anchors (every host does it when it starts): raise the
    registration counters past every number announced, mark sent the notices already sent, list the declarations
    lost or behind, and say whether the audit chains end before the anchors."""
    prepare_database()
    report = restore_check(record=record_restore)
    if as_json:
        echo_json(report.as_dict())
        return
    _print_check(report.as_dict(), report.summary())


def _print_check(check: dict, summary: str) -> None:
    typer.echo(summary)
    if check.get("anchors") and not check["anchors"]["recorded"]:
        typer.secho(
            f"audit chains {check['anchors']['described']}: anchoring is stopped until the restore is confirmed "
            "(customs backup check --record-restore)",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if check["lost"]:
        typer.echo("\nDeclarations lost (the database never had them; their declarants were told the following):")
        rows = (
            [d["application_id"], d["registration_number"], ", ".join(n["kind"] for n in d["notices"])] for d in check["lost"]
        )
        table(("application", "number announced", "notices sent"), rows, indent="  ")
    if check["behind"]:
        typer.echo("\nDeclarations behind what was announced (re-registered, they keep the announced number):")
        rows = (
            [d["application_id"], d["status_now"], d["registration_number_now"], d["registration_number"]]
            for d in check["behind"]
        )
        table(("application", "status now", "number now", "number announced"), rows, indent="  ")
