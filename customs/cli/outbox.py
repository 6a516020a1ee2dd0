"""Notices to declarants and the support service: the e-mail outbox."""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Annotated, Optional

import typer

from customs.cli.root import fail, prepare_database
from customs.core.settings import get_settings
from customs.services.outbox import dispatch_due_sync, list_notices, requeue_failed, requeue_notice

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

outbox_app = typer.Typer(help="Notices to declarants and the support service (the e-mail outbox).", no_args_is_help=True)
commands.add_typer(outbox_app, name="outbox")


@outbox_app.command("list")
def outbox_list(
    status: Annotated[Optional[str], typer.Option(help="pending, sent, failed or undeliverable.")] = None,
    application: Annotated[Optional[str], typer.Option(help="Only the notices of this application id.")] = None,
    limit: Annotated[int, typer.Option(help="Newest first, at most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
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
    for row in rows:
        line = (
            f"{row['id']:>6}  {row['status']:<13} {row['kind']:<22} {row['application_id']:<20} "
            f"{row['recipient'] or '-':<32} tries {row['attempts']}"
        )
        typer.echo(line + (f"  ({row['last_error'][:80]})" if row["last_error"] and row["status"] != "sent" else ""))
    if not rows:
        typer.echo("no notices")


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
    actor: Annotated[str, typer.Option(help="Who asks (recorded with the attempt).")] = os.environ.get("USER", "operator"),
) -> None:
    """Queue a failed or undeliverable notice again (or every failed one)."""
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
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"notice {result['id']} queued again for {result['recipient']}")
