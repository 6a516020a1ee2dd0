"""The append-only, hash-chained audit trail."""

from __future__ import annotations

import typer

from customs.cli.root import fail, prepare_database
from customs.services.queries import verify_audit_chain

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

audit_app = typer.Typer(help="The append-only, hash-chained audit trail (one chain per customs office).", no_args_is_help=True)
commands.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute every audit chain (one per customs office); name the broken chain and its first broken event."""
    prepare_database()
    check = verify_audit_chain()
    if check.intact:
        typer.echo(f"audit chains intact: {check.events} events in {check.chains} chain{'s' if check.chains != 1 else ''}")
        return
    fail(
        f"audit chain {check.chain} broken at event {check.broken_seq} (declaration {check.broken_application_id or '?'}): "
        f"{check.problem}",
        code=1,
    )
