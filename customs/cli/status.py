"""Reading: a declaration's status and history, and the declaration document's JSON Schema (no Prefect
is imported, so these answer in about a second)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from customs.cli.root import fail, prepare_database, print_outcome
from customs.core.db import DeclarationNotFound
from customs.services.queries import declaration_status
from models.document import declaration_json_schema

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS


@commands.command()
def status(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Status of a declaration with the history of its transitions."""
    prepare_database()
    try:
        result = declaration_status(key)
    except DeclarationNotFound as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    print_outcome(result)
    typer.echo("history:")
    for event in result["history"]:
        if event["event"] == "transition":
            typer.echo(f"  {event['at_kz']}  {event['from'] or '-':>20} -> {event['to']:<22} by {event['actor']}")
        else:
            typer.echo(f"  {event['at_kz']}  {event['event']:>45} by {event['actor']}")
        for reason in event["reasons"]:
            typer.echo(f"      {reason['code']} at {reason['path']}")


@commands.command()
def schema() -> None:
    """Print the JSON Schema of the declaration document (generated from the models)."""
    typer.echo(json.dumps(declaration_json_schema(), ensure_ascii=False, indent=2))
