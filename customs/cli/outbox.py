"""Notices to declarants and the support service: the e-mail outbox."""

from __future__ import annotations

import json
from typing import Annotated, Literal, Optional

import typer

from customs.cli.root import ExitCode, JsonOption, fail, not_found, prepare_database, refused, table
from customs.cli.signing import (
    ActOption,
    ActSignatureOption,
    CertOption,
    ChainOption,
    KeyOption,
    OfficialOption,
    signed_act_from_options,
    since_moment,
)
from customs.core.settings import get_settings
from customs.rules import Refused
from customs.services.outbox import dispatch_due_sync, list_notices, requeue_failed, requeue_notice, requeue_subject
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
        bool, typer.Option("--all-failed", help="Every failed notice (e.g. after fixing the SMTP settings); a supervisor's act.")
    ] = False,
    since: Annotated[
        Optional[str],
        typer.Option(help="With --all-failed: only those last tried since this ISO time, e.g. 2026-11-26T10:00+05:00."),
    ] = None,
    official: OfficialOption = None,
    key: KeyOption = None,
    cert: CertOption = None,
    chain: ChainOption = [],
    act: ActOption = None,
    signature: ActSignatureOption = None,
    as_json: JsonOption = False,
) -> None:
    """Queue a failed or undeliverable notice again (or every failed one), by an official's act signed with their own
    NCA key (requeue_notice): the delivery attempt and the audit chain name the official and the act."""
    if all_failed and (notice_id is not None or to is not None):
        fail("--all-failed takes no notice id and no --to", as_json=as_json)
    if not all_failed and notice_id is None:
        fail("give a notice id, or --all-failed", as_json=as_json)
    if since is not None and not all_failed:
        fail("--since is for --all-failed", as_json=as_json, path="since")
    moment = since_moment(since, as_json=as_json)
    prepare_database()
    subject = requeue_subject(None if all_failed else notice_id, moment)
    signed = signed_act_from_options(
        "requeue_notice",
        official,
        key,
        cert,
        chain,
        act,
        signature,
        as_json=as_json,
        subject=subject,
        choice={"to": to} if to is not None else None,
    )
    try:
        if all_failed:
            count = requeue_failed(act=signed, since=moment, official_id=official)
        else:
            result = requeue_notice(notice_id, act=signed, recipient=to, official_id=official)
    except LookupError as exc:
        not_found(exc, as_json, code="NOTICE_NOT_FOUND", path="notice_id")
    except Refused as exc:
        refused(exc, as_json)
    if all_failed:
        typer.echo(json.dumps({"requeued": count}) if as_json else f"{count} failed notices queued again")
    elif as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        typer.echo(f"notice {result['id']} queued again for {result['recipient']} (signed act {result['signed_act']})")
