"""Notices to declarants and the support service: the e-mail outbox."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal, Optional

import typer

from customs.cli.root import (
    DEFAULT_OPERATOR,
    ExitCode,
    JsonOption,
    OperatorOption,
    fail,
    not_found,
    operator_of,
    prepare_database,
    table,
)
from customs.core.settings import get_settings
from customs.services.outbox import dispatch_due_sync, list_notices, requeue_failed, requeue_notice
from models.outbox import NoticeStatus

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

outbox_app = typer.Typer(help="Notices to declarants and the support service (the e-mail outbox).", no_args_is_help=True)
commands.add_typer(outbox_app, name="outbox")

Status = Literal[tuple(s.value for s in NoticeStatus)]


@outbox_app.command("list")
def outbox_list(
    status: Annotated[Optional[Status], typer.Option(help="Only the notices in this state.")] = None,
    application: Annotated[Optional[str], typer.Option(help="Only the notices of this application id.")] = None,
    limit: Annotated[int, typer.Option(help="Newest first, at most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List notices, newest first."""
    prepare_database()
    try:
        rows = list_notices(status=status, application_id=application, limit=limit)
    except ValueError as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table(
        ("id", "status", "kind", "application", "recipient", "tries", "last error"),
        (
            (
                row["id"],
                row["status"],
                row["kind"],
                row["application_id"],
                row["recipient"],
                row["attempts"],
                row["last_error"][:80] if row["last_error"] and row["status"] != "sent" else None,
            )
            for row in rows
        ),
        empty="no notices",
    )


@outbox_app.command("dispatch")
def outbox_dispatch_command(limit: Annotated[Optional[int], typer.Option(help="At most this many notices.")] = None) -> None:
    """Send the notices that are due now (one pass, in this process; the scheduled flow does the same)."""
    prepare_database()
    settings = get_settings()
    report = dispatch_due_sync(limit=limit)
    where = f"SMTP {settings.smtp_host}:{settings.smtp_port or ''}" if settings.smtp_host else f".eml files in {settings.eml_dir}"
    typer.echo(
        f"{report.claimed} due, {report.sent} sent ({where}), "
        f"{report.outcomes['retry']} to retry, {report.outcomes['failed']} failed"
    )
    for error in report.errors[:20]:
        typer.echo(f"  {error}")
    if report.unavailable:  # the notices wait for the next pass
        fail(f"{where} took nothing this pass: {report.unavailable}", ExitCode.UNAVAILABLE, code="SERVICE_UNAVAILABLE")


@outbox_app.command("requeue")
def outbox_requeue(
    notice_id: Annotated[Optional[int], typer.Argument(help="Notice id (see `customs outbox list`).")] = None,
    to: Annotated[Optional[str], typer.Option("--to", help="Send to this corrected address instead (audited).")] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Every failed notice (e.g. after fixing the SMTP settings).")
    ] = False,
    since: Annotated[
        Optional[str],
        typer.Option(help="With --all-failed: only those last tried since this ISO time, e.g. 2026-11-26T10:00+05:00."),
    ] = None,
    operator: OperatorOption = DEFAULT_OPERATOR,
    actor: Annotated[Optional[str], typer.Option("--actor", hidden=True, help="Deprecated: --operator.")] = None,
) -> None:
    """Queue a failed or undeliverable notice again (or every failed one)."""
    actor = operator_of(operator, actor, "--actor")
    prepare_database()
    if all_failed:
        if notice_id is not None or to is not None:
            fail("--all-failed takes no notice id and no --to")
        try:
            moment = datetime.fromisoformat(since) if since else None
        except ValueError:
            fail(f"--since must be an ISO time such as 2026-11-26T10:00+05:00; {since!r} given")
        if moment is not None and moment.tzinfo is None:
            fail("--since needs a time zone, e.g. +05:00 for Kazakhstan time")
        typer.echo(f"{requeue_failed(actor=actor, since=moment)} failed notices queued again")
        return
    if notice_id is None:
        fail("give a notice id, or --all-failed")
    try:
        result = requeue_notice(notice_id, actor=actor, recipient=to)
    except LookupError as exc:
        not_found(exc, False, code="NOTICE_NOT_FOUND", path="notice_id")
    except ValueError as exc:
        fail(str(exc), ExitCode.REFUSED, code="NOTICE_NOT_REQUEUED", path="notice_id")
    typer.echo(f"notice {result['id']} queued again for {result['recipient']}")
