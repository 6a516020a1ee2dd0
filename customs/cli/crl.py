"""Certificate revocation lists of the trusted CAs."""

from __future__ import annotations

import json

import typer

from customs.cli.root import ExitCode, JsonOption, fail, table
from customs.pki.crl_refresh import PROBLEM_OUTCOMES, CrlRefreshNotConfigured, refresh_crls

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

crl_app = typer.Typer(help="Certificate revocation lists of the trusted CAs.", no_args_is_help=True)
commands.add_typer(crl_app, name="crl")


@crl_app.command("refresh")
def crl_refresh_command(as_json: JsonOption = False) -> None:
    """Download the CRLs of CUSTOMS_CRL_URLS into CUSTOMS_CRL_DIR (what crl-refresh does hourly).

    Each is checked against its issuer first; exit 1 when one is refused."""
    try:
        report = refresh_crls()
    except CrlRefreshNotConfigured as exc:
        fail(str(exc), as_json=as_json)
    rows = report.as_dicts()
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        table(
            ("outcome", "code", "issuer", "CRL number", "next update", "file", "message"),
            (
                (
                    r["outcome"],
                    r.get("code"),
                    r.get("issuer"),
                    r.get("crl_number"),
                    r.get("next_update"),
                    r.get("file"),
                    r.get("message"),
                )
                for r in rows
            ),
            empty="no CRL URLs configured (CUSTOMS_CRL_URLS)",
        )
    if any(row["outcome"] in PROBLEM_OUTCOMES for row in rows):
        raise typer.Exit(ExitCode.PROBLEM)
