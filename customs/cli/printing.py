"""Paper copies: the request, the office's print queue, the copy itself, printed and handed over, the SLA."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer

from customs.cli.root import JsonOption, fail, not_found, prepare_database, refused, table
from customs.cli.signing import (
    ActOption,
    ActSignatureOption,
    CertOption,
    ChainOption,
    KeyOption,
    OfficialOption,
    signed_act_from_options,
)
from customs.core.clock import kz_display
from customs.core.db import DeclarationNotFound
from customs.core.settings import get_settings
from customs.orchestration.timers import schedule_print_timers_if_served
from customs.rules import Refused
from customs.services.outbox import dispatch_due_sync
from customs.services.printing import (
    copy_of,
    mark_printed,
    print_act_subject,
    print_queue,
    render_print_copy,
    request_print,
    sla_report,
)

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS


@commands.command("print-request")
def print_request_command(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    requested_by: Annotated[
        Optional[str], typer.Option("--requested-by", help="IIN or BIN of the applicant asking (the declarant's or a signer's).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Record the applicant's request for a paper copy, queued at the office, due in 30 minutes; then its copy is rendered."""
    prepare_database()
    try:
        result = request_print(key, requested_by=requested_by)
    except DeclarationNotFound as exc:
        not_found(exc, as_json)
    except Refused as exc:
        refused(exc, as_json)
    dispatch_due_sync(application_id=result.application_id)
    rendering = None
    if result.created:  # the copy's run and the deadline timers, when `customs serve` runs
        scheduled, note = schedule_print_timers_if_served(
            result.request_id, result.requested_at + get_settings().print_alert_after, result.due_at
        )
        if note:
            typer.secho(f"note: {note}", err=True)
        rendering = "by its paper-copy run" if scheduled else None
        if not scheduled:  # nothing runs the copy here: render it now (print-deadlines would, a minute later)
            try:
                outcome = render_print_copy(result.request_id)
                rendering = f"rendered in {outcome.seconds:.1f} s, {outcome.bytes} bytes" if outcome.rendered else outcome.note
            except Exception as exc:
                typer.secho(f"note: the copy could not be rendered now ({exc}); print-deadlines tries again", err=True)
                rendering = "not rendered yet"

    out = {
        "request_id": result.request_id,
        "application_id": result.application_id,
        "registration_number": result.registration_number,
        "office": result.office,
        "requested_at_kz": kz_display(result.requested_at),
        "due_at_kz": kz_display(result.due_at),
        "created": result.created,
        "copy": rendering,
    }
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    note = "" if result.created else "  (already in the queue: the existing request)"
    typer.echo(f"print request {result.request_id} for {result.registration_number}{note}")
    typer.echo(f"  queued at office {result.office}; requested {out['requested_at_kz']}; due {out['due_at_kz']}")
    if rendering:
        typer.echo(f"  copy: {rendering}")


@commands.command("print-queue")
def print_queue_command(
    office: Annotated[Optional[str], typer.Option(help="Only this customs office.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Pending print requests, most urgent first, with the minutes left."""
    prepare_database()
    rows = print_queue(office=office)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table(
        ("request", "registration number", "office", "due at", "time left"),
        (
            (
                row["request_id"],
                row["registration_number"],
                row["office"],
                row["due_at_kz"],
                f"{row['minutes_left']} min left" if row["minutes_left"] >= 0 else f"OVERDUE by {-row['minutes_left']} min",
            )
            for row in rows
        ),
        empty="no pending print requests",
    )


@commands.command("print-copy")
def print_copy_command(
    request_id: Annotated[str, typer.Argument(help="Print request id.")],
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", help="Where to write the PDF (default: REQUEST_ID.pdf).")
    ] = None,
) -> None:
    """Write the rendered copy (PDF) of a print request, to print it."""
    prepare_database()
    try:
        request, pdf = copy_of(request_id)
    except Refused as exc:
        refused(exc, as_json=False)
    target = output or Path(f"{request_id}.pdf")
    target.write_bytes(pdf)
    typer.echo(f"{target}: copy of {request.registration_number}, {len(pdf)} bytes, SHA-256 {request.pdf_sha256}")
    if request.copy_signature:  # a GOST service key: the authority's detached CMS of the PDF, kept with the request
        Path(f"{target}.p7s").write_bytes(request.copy_signature)
        typer.echo(f"{target}.p7s: the authority's detached signature of the copy (GOST); keep it with the PDF")
    elif request.copy_signature_kind == "none":
        typer.secho("note: this copy is not signed by the authority (no service certificate was configured)", err=True)


@commands.command()
def printed(
    request_id: Annotated[str, typer.Argument(help="Print request id.")],
    official: OfficialOption = None,
    key: KeyOption = None,
    cert: CertOption = None,
    chain: ChainOption = [],
    act: ActOption = None,
    signature: ActSignatureOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record that the copy was printed and handed over (after the 30 minutes it is recorded as late), by the act of
    an official of the office signed with their own NCA key (mark_printed)."""
    prepare_database()
    try:
        signed = signed_act_from_options(
            "mark_printed",
            official,
            key,
            cert,
            chain,
            act,
            signature,
            as_json=as_json,
            subject=print_act_subject(request_id) if act is None else None,
        )
        result = mark_printed(request_id, act=signed, official_id=official)
    except Refused as exc:
        refused(exc, as_json)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        typer.echo(
            f"{request_id} printed by {result['printed_by']} after {result['minutes']} min"
            + (" (LATE: over 30 minutes)" if result["late"] else " (in time)")
            + f"; signed act {result['signed_act']}"
        )


@commands.command()
def sla(
    date_from: Annotated[Optional[str], typer.Option("--from", help="First day, YYYY-MM-DD (Kazakhstan date).")] = None,
    date_to: Annotated[Optional[str], typer.Option("--to", help="Last day, YYYY-MM-DD (inclusive).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Paper copies per office: requests, printed in time, late, open, median and 95th-percentile minutes to print."""

    def day(value: Optional[str], option: str):
        if value is None:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            fail(f"{option} must be a date YYYY-MM-DD; {value!r} given", as_json=as_json)

    first, last = day(date_from, "--from"), day(date_to, "--to")
    if first and last and first > last:
        fail(f"--from {first} is after --to {last}", as_json=as_json)
    prepare_database()
    report = sla_report(date_from=first, date_to=last)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    keys = ("office", "requests", "printed_in_time", "late", "open", "open_overdue", "median_minutes", "p95_minutes")
    table(
        ("office", "requests", "in time", "late", "open", "overdue", "median min", "p95 min"),
        ([row.get(k) for k in keys] for row in report["offices"] + [{"office": "all", **report["total"]}]),
    )
