"""The append-only, hash-chained audit trail."""

from __future__ import annotations

import typer

from customs.cli.root import fail, prepare_database
from customs.services.queries import verify_audit_chain

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

audit_app = typer.Typer(help="The append-only, hash-chained audit trail.", no_args_is_help=True)
commands.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; name the first broken event."""
    prepare_database()
    check = verify_audit_chain()
    if check.intact:
        typer.echo(f"audit chain intact: {check.events} events")
        return
    fail(
        f"audit chain broken at event {check.broken_seq} (declaration {check.broken_application_id or '?'}): {check.problem}",
        code=1,
    )
