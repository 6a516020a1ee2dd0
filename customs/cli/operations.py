"""Operations: the operations summary, and batch-recheck on demand."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from customs.cli.root import fail, prepare_database
from customs.core.settings import get_settings
from customs.orchestration.operations import operations_view
from customs.orchestration.server import running_api_url
from customs.orchestration.starting import restart_with
from customs.services.recheck import batch_recheck_run

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS


@commands.command()
def ops(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
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
    for row in summary["awaiting_official"]:
        flag = " BREACHED" if row["breached"] else (" alerted" if row["alerted"] else "")
        typer.echo(
            f"  {row['registration_number']:<24} zone {row['zone'] or '-':<10} lane {row['lane']:<7} "
            f"due {row['due_kz']} ({row['minutes_left']} min){flag}"
        )
    typer.echo(
        f"release marks open: {summary['marks_open']}; "
        f"overdue (> {summary['mark_overdue_minutes']} min): {len(summary['marks_overdue'])}"
    )
    for row in summary["marks_overdue"]:
        typer.echo(f"  {row['registration_number']:<24} zone {row['zone'] or '-':<10} open {row['open_minutes']} min")
    typer.echo(f"print requests open: {len(summary['print_requests_open'])}")
    for row in summary["print_requests_open"]:
        typer.echo(
            f"  {row['request_id']:<20} {row['registration_number']:<24} office {row['office']}  {row['minutes_left']} min left"
        )
    if summary["failed_runs"] is None:
        typer.echo("failed clearance runs: unknown (no Prefect server answers)")
    else:
        typer.echo(f"failed clearance runs (24 h): {len(summary['failed_runs'])}")
        for run in summary["failed_runs"][:20]:
            typer.echo(f"  {run['flow_run']:<24} {run['state']:<8} {run['message'][:90]}")
    typer.echo(f"clearance runs reconciled (24 h): {len(summary['reconciled_runs'])}")
    for row in summary["reconciled_runs"][:20]:
        typer.echo(f"  {row['at_kz']}  {row['flow_run'] or '-':<24} {row['state'] or '-':<10} {row['action']:<8} {row['why']}")
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
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What batch-recheck does, now: stuck declarations, passed release deadlines, signers revoked since (current CRLs)."""
    prepare_database()
    starter = None
    if restart:
        api_url = running_api_url(get_settings())
        if api_url is None:
            fail("--restart needs a running Prefect server with the clearance deployment (customs serve)")
        starter = restart_with(api_url)
    result = batch_recheck_run(restart=starter)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2, default=str))
        return
    typer.echo(
        f"read {result['scanned']} declarations; "
        + (", ".join(f"{k}: {v}" for k, v in result["counts"].items()) or "nothing found")
    )
    for finding in result["findings"][:50]:
        typer.echo(
            f"  {finding['application_id']:<20} {finding['status']:<20} {finding['finding']:<34} "
            f"{finding['action']:<16} {finding['detail']}"
        )
