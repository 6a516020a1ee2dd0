"""The root of ``customs``: the app, which loads each command's module only when that command runs, and
what commands share.

Every module of customs.cli that holds commands defines ``commands = typer.Typer()`` and imports what
its commands need at the top. ``COMMANDS`` names the module of each command and command group, so
`customs status` imports the database layer only, and only the commands that talk to Prefect import it
(about two seconds of start-up that `customs status` or `customs marks` would otherwise pay).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, NoReturn

import click
import typer
from typer.core import TyperGroup
from typer.main import get_group

from customs.core.db import init_db
from customs.rules import Refused
from customs.services.queries import declaration_status

# Command (or command group) -> the module of customs.cli that defines it, in the order `customs --help` lists them.
COMMANDS = {
    "submit": "declarations",
    "status": "status",
    "clear": "declarations",
    "rerun": "declarations",
    "schema": "status",
    "decide": "officials",
    "cancel-release": "officials",
    "marks": "officials",
    "mark": "officials",
    "deadlines": "officials",
    "print-request": "printing",
    "print-queue": "printing",
    "print-copy": "printing",
    "printed": "printing",
    "sla": "printing",
    "ops": "operations",
    "recheck": "operations",
    "outbox": "outbox",
    "audit": "audit",
    "clients": "clients",
    "pki": "pki",
    "sign": "pki",
    "crl": "crl",
    "serve": "server",
    "server": "server",
    "deploy": "server",
    "worker": "server",
    "demo": "demo",
}


class LazyCommands(TyperGroup):
    """The root group: a command's module is imported when the command is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        return get_group(importlib.import_module(f"customs.cli.{module}").commands).get_command(ctx, cmd_name)


app = typer.Typer(cls=LazyCommands, no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """Customs clearance back office (Kazakhstan state revenue bodies)."""


def fail(message: str, code: int = 2, *, as_json: bool = False, error: dict | None = None) -> NoReturn:
    """Stop with ``message`` on stderr (or ``{"error": ...}`` on stdout with ``--json``), exit code 2."""
    if as_json:
        typer.echo(json.dumps({"error": error or {"message": message}}, ensure_ascii=False))
    else:
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def refused(exc: Refused, as_json: bool) -> NoReturn:
    """A refusal of the rules, as the official or operator who asked reads it."""
    fail(f"{exc.message} [{exc.code}]", as_json=as_json, error=exc.as_dict())


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror}")


def prepare_database() -> None:
    init_db()


def echo_json(value: Any, *, indent: int | None = None) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=indent, default=str))


def outcome(application_id: str, created: bool | None = None) -> dict:
    status = declaration_status(application_id)
    keys = (
        "application_id",
        "status",
        "submitted_at",
        "submitted_at_kz",
        "registration_number",
        "lane",
        "risk_profiles",
        "decision_code",
        "reasons",
    )
    result = {k: status[k] for k in keys}
    if created is not None:
        result["created"] = created
    return result


def print_outcome(result: dict) -> None:
    again = "" if result.get("created", True) else "  (these bytes were submitted before: existing application)"
    typer.echo(f"application id:       {result['application_id']}{again}")
    typer.echo(f"submitted at:         {result['submitted_at_kz']}")
    typer.echo(f"status:               {result['status']}")
    if result.get("registration_number"):
        typer.echo(f"registration number:  {result['registration_number']}")
    if result.get("lane"):
        profiles = ", ".join(result.get("risk_profiles") or []) or "none"
        typer.echo(f"lane:                 {result['lane']} (risk profiles: {profiles})")
    if result.get("decision_code"):
        typer.echo(f"decision:             {result['decision_code']}")
    for reason in result.get("reasons") or []:
        typer.echo(f"  - {reason['code']} at {reason['path']}: {reason['message']}")
