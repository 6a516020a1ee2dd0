"""Certificate revocation lists of the trusted CAs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from customs.cli.root import fail
from customs.pki.crl_refresh import PROBLEM_OUTCOMES, CrlRefreshNotConfigured, refresh_crls

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

crl_app = typer.Typer(help="Certificate revocation lists of the trusted CAs.", no_args_is_help=True)
commands.add_typer(crl_app, name="crl")


@crl_app.command("refresh")
def crl_refresh_command(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Download the CRLs of CUSTOMS_CRL_URLS into CUSTOMS_CRL_DIR, each checked against its issuer first
    (what crl-refresh does hourly)."""
    try:
        report = refresh_crls()
    except CrlRefreshNotConfigured as exc:
        fail(str(exc), as_json=as_json)
    rows = report.as_dicts()
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        for row in rows:
            typer.echo(
                f"{row['outcome']:<16} {row.get('code') or '':<24} {row.get('issuer') or '-':<40} "
                f"no. {row.get('crl_number') or '-':<12} "
                f"next {row.get('next_update') or '-'}  {row.get('file') or ''}  {row.get('message') or ''}"
            )
        if not rows:
            typer.echo("no CRL URLs configured (CUSTOMS_CRL_URLS)")
    if any(row["outcome"] in PROBLEM_OUTCOMES for row in rows):
        raise typer.Exit(1)
