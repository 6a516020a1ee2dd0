"""Operations: the operations summary, and batch-recheck on demand."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from customs.cli.root import ExitCode, JsonOption, fail, prepare_database, table
from customs.core.settings import get_settings
from customs.orchestration.operations import operations_view
from customs.orchestration.server import running_api_url
from customs.orchestration.starting import restart_with
from customs.services.recheck import batch_recheck_run

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS


@commands.command()
def ops(as_json: JsonOption = False) -> None:
    """Operations summary: declarations by status, waiting for officials with their deadlines, open release marks, the outbox."""
    prepare_database()
    summary = operations_view()
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))
        return
    typer.echo("declarations: " + ", ".join(f"{k} {v}" for k, v in summary["declarations"].items()))
    typer.echo("lanes (registered): " + (", ".join(f"{k} {v}" for k, v in summary["lanes"].items()) or "none"))
    if summary["oldest_in_progress"]:
        oldest = summary["oldest_in_progress"]
        typer.echo(f"oldest in progress: {oldest['application_id']} at {oldest['status']} for {oldest['resting_minutes']} min")
    typer.echo(f"awaiting an official: {len(summary['awaiting_official'])}")
    table(
        ("registration number", "zone", "lane", "due at", "min left", "deadline"),
        (
            (
                row["registration_number"],
                row["zone"],
                row["lane"],
                row["due_kz"],
                row["minutes_left"],
                "BREACHED" if row["breached"] else ("alerted" if row["alerted"] else None),
            )
            for row in summary["awaiting_official"]
        ),
        indent="  ",
    )
    typer.echo(
        f"release marks open: {summary['marks_open']}; "
        f"overdue (> {summary['mark_overdue_minutes']} min): {len(summary['marks_overdue'])}"
    )
    table(
        ("registration number", "zone", "open (min)"),
        ((row["registration_number"], row["zone"], row["open_minutes"]) for row in summary["marks_overdue"]),
        indent="  ",
    )
    typer.echo(f"print requests open: {len(summary['print_requests_open'])}")
    table(
        ("request", "registration number", "office", "min left"),
        (
            (row["request_id"], row["registration_number"], row["office"], row["minutes_left"])
            for row in summary["print_requests_open"]
        ),
        indent="  ",
    )
    if summary["failed_runs"] is None:
        typer.echo("failed clearance runs: unknown (no Prefect server answers)")
    else:
        typer.echo(f"failed clearance runs (24 h): {len(summary['failed_runs'])}")
        table(
            ("flow run", "state", "message"),
            ((run["flow_run"], run["state"], run["message"][:90]) for run in summary["failed_runs"][:20]),
            indent="  ",
        )
    typer.echo(f"clearance runs reconciled (24 h): {len(summary['reconciled_runs'])}")
    table(
        ("at", "flow run", "state", "action", "why"),
        ((row["at_kz"], row["flow_run"], row["state"], row["action"], row["why"]) for row in summary["reconciled_runs"][:20]),
        indent="  ",
    )
    alerts = summary.get("alerts") or []
    typer.echo(f"alerts sent to a person by the automations (last {len(alerts)}):" if alerts else "alerts sent: none")
    table(
        ("received", "kind", "application", "to"),
        ((row["received_at"][:19], row["kind"], row["application_id"], ", ".join(row["recipients"])[:70]) for row in alerts),
        indent="  ",
    )
    typer.echo("outbox: " + ", ".join(f"{k} {v}" for k, v in summary["outbox"].items()))
    anchor = summary["audit_anchor"]
    if anchor is None:
        typer.echo("audit anchor: none yet (customs audit anchor)")
    elif "error" in anchor:
        typer.echo(f"audit anchor: cannot be read: {anchor['error']}")
    else:
        chains = len(anchor["chains"])
        typer.echo(f"audit anchor: {anchor['anchor']} of {anchor['anchored_at_kz']}, {chains} chains ({anchor['file']})")


@commands.command()
def recheck(
    restart: Annotated[
        bool,
        typer.Option("--restart/--report-only", help="Start a clearance run for each stuck declaration (needs `customs serve`)."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """What batch-recheck does, now: stuck declarations, passed release deadlines, signers revoked since (current CRLs)."""
    prepare_database()
    starter = None
    if restart:
        api_url = running_api_url(get_settings())
        if api_url is None:
            fail(
                "--restart needs a running Prefect server with the clearance deployment (customs serve)",
                ExitCode.UNAVAILABLE,
                as_json=as_json,
                code="SERVICE_UNAVAILABLE",
            )
        starter = restart_with(api_url)
    result = batch_recheck_run(restart=starter)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2, default=str))
        return
    typer.echo(
        f"read {result['scanned']} declarations; "
        + (", ".join(f"{k}: {v}" for k, v in result["counts"].items()) or "nothing found")
    )
    table(
        ("application", "status", "finding", "action", "detail"),
        ((f["application_id"], f["status"], f["finding"], f["action"], f["detail"]) for f in result["findings"][:50]),
        indent="  ",
    )
