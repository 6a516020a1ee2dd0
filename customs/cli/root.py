"""The root of ``customs``: the Typer app every command group registers with, and what commands share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import typer

from customs.core.db import init_db
from customs.rules import Refused
from customs.services.queries import declaration_status

app = typer.Typer(help="Customs clearance back office (Kazakhstan state revenue bodies).", no_args_is_help=True, add_completion=False)


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
    keys = ("application_id", "status", "submitted_at", "submitted_at_kz", "registration_number", "lane", "risk_profiles", "decision_code", "reasons")
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
