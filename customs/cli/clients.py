"""``customs clients``: the clients of the intake HTTP API and their bearer tokens."""

from __future__ import annotations

import json
from typing import Annotated, Literal, Optional

import typer

from customs.cli.root import ExitCode, JsonOption, fail, not_found, prepare_database, table
from customs.core.clock import kz_display, utcnow
from customs.services.clients import KINDS, ClientNotFound, create_client, list_clients, revoke_client

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

clients_app = typer.Typer(help="Clients of the intake HTTP API and their bearer tokens.", no_args_is_help=True)
commands.add_typer(clients_app, name="clients")

Kind = Literal[KINDS]


@clients_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A unique name for the client, e.g. alatau-import or egov-portal.")],
    kind: Annotated[
        Kind,
        typer.Option("--kind", help="declarant (acts for its --id only), portal (any declarant) or official (as --official)."),
    ],
    ids: Annotated[
        list[str], typer.Option("--id", help="For declarant clients: an IIN or BIN it acts for (repeat for several).")
    ] = [],
    official: Annotated[
        Optional[str], typer.Option("--official", help="For official clients: the official's id (reference/officials.json).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Register a client and print its bearer token, once."""
    prepare_database()
    try:
        client, token = create_client(name, kind, ids, official)
    except ValueError as exc:
        fail(str(exc), ExitCode.REFUSED, as_json=as_json, code="CLIENT_INVALID")
    if as_json:
        typer.echo(json.dumps({**client.summary(), "token": token}, ensure_ascii=False))
    else:
        typer.echo(
            f"client:  {client.name} ({client.kind})"
            + (f" for {', '.join(client.identifiers)}" if client.identifiers else "")
            + (f" as official {client.official_id}" if client.official_id else "")
        )
        typer.echo(f"token:   {token}")
    typer.secho(
        "warning: the token is shown only now and is not stored (only its SHA-256 is); "
        "give it to the client's operator over a secure channel. Lost: revoke the client and add a new one.",
        fg=typer.colors.YELLOW,
        err=True,
    )


@clients_app.command("list")
def list_command(
    active: Annotated[bool, typer.Option("--active", help="Only clients not revoked.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The clients, by name (tokens are never shown)."""
    prepare_database()
    clients = list_clients(include_revoked=not active)
    if as_json:
        typer.echo(json.dumps([c.summary() for c in clients], ensure_ascii=False))
        return
    if not clients:
        typer.echo("no API clients (add one with `customs clients add NAME --kind ...`)")
        return
    table(
        ("name", "kind", "acts for", "created", "state"),
        (
            (
                c.name,
                c.kind,
                ", ".join(c.identifiers) if c.identifiers else (c.official_id or "any declarant"),
                kz_display(c.created_at),
                f"revoked {kz_display(c.revoked_at)}" if c.revoked_at else "active",
            )
            for c in clients
        ),
    )


@clients_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The client's name.")]) -> None:
    """Revoke a client: its token stops working at once."""
    prepare_database()
    now = utcnow()
    try:
        client = revoke_client(name, now=now)
    except ClientNotFound as exc:
        not_found(exc, False, code="CLIENT_NOT_FOUND", path="name")
    if client.revoked_at != now:
        typer.echo(f"{client.name} was already revoked ({kz_display(client.revoked_at)})")
    else:
        typer.echo(f"{client.name} revoked ({kz_display(client.revoked_at)}); its token no longer authenticates")
