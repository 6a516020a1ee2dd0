"""Reading: a declaration's status and history, and the declaration document's JSON Schema (no Prefect
is imported, so these answer in about a second)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from customs.cli.root import JsonOption, not_found, prepare_database, print_outcome, table
from customs.core.db import DeclarationNotFound
from customs.rules.signers import LEGAL_ENTITY, ROLE_NAMES
from customs.services.queries import declaration_status
from models.document import declaration_json_schema

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS


@commands.command()
def status(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    as_json: JsonOption = False,
) -> None:
    """Status of a declaration, its SHA-256, its signers and the history of its transitions.

    By application id or registration number: status, number, lane and reasons; the SHA-256 of the bytes as
    received (the paper copy names it); each signature (document, signer, IIN, BIN, NCA role, valid); the
    history in Kazakhstan time."""
    prepare_database()
    try:
        result = declaration_status(key)
    except DeclarationNotFound as exc:
        not_found(exc, as_json)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    print_outcome(result)
    typer.echo(f"channel:              {result['channel']}")
    typer.echo(f"SHA-256:              {result['sha256']}  (of the declaration's bytes as received and stored)")
    typer.echo("signers:" if result["signers"] else "signers:             none recorded (signatures not checked yet, or paper)")
    table(
        ("document", "signer", "IIN", "BIN", "role", "serial", "signature"),
        (_signer_row(summary) for summary in result["signers"]),
        indent="  ",
    )
    typer.echo("history:")
    table(
        ("at (Kazakhstan time)", "event", "from", "to", "by", "reasons"),
        (
            (
                e["at_kz"],
                e["event"],
                e["from"] if e["event"] == "transition" else None,
                e["to"] if e["event"] == "transition" else None,
                e["actor"],
                ", ".join(r["code"] for r in e["reasons"]),
            )
            for e in result["history"]
        ),
        indent="  ",
    )


def _signer_row(summary: dict) -> tuple:
    """One signature as stored (customs.pki.verify.DocumentVerdict.summary): where, who, their NCA role, valid."""
    who = summary.get("signer") or {}
    roles = [ROLE_NAMES.get(oid, oid) for oid in who.get("roles") or () if oid != LEGAL_ENTITY]
    return (
        summary.get("filename") or summary.get("document"),
        who.get("name") or who.get("subject"),
        who.get("iin"),
        who.get("bin"),
        ", ".join(roles) or ("-" if "roles" in who else "(not recorded)"),
        who.get("serial"),
        "valid" if summary.get("valid") else "NOT valid",
    )


@commands.command()
def schema() -> None:
    """Print the JSON Schema of the declaration document (generated from the models)."""
    typer.echo(json.dumps(declaration_json_schema(), ensure_ascii=False, indent=2))
