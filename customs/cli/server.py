"""The local Prefect server, and `customs serve`: everything at once."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from customs.cli.root import fail
from customs.cli.serve import serve
from customs.core.settings import configure, get_settings
from customs.orchestration.server import PrefectServerError, ensure_server, stop_server, ui_url
from customs.orchestration.starting import stop_background_clearances

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

server_app = typer.Typer(help="The local Prefect server that records flow runs.", no_args_is_help=True)
commands.add_typer(server_app, name="server")


@commands.command("serve")
def serve_command(
    port: Annotated[Optional[int], typer.Option(help="Port of the intake API (default CUSTOMS_API_PORT, 8080).")] = None,
) -> None:
    """Run it all: the Prefect server (or PREFECT_API_URL), the deployments of prefect.yaml, the worker, the intake API."""
    settings = get_settings()
    if port is not None:
        settings = settings.model_copy(update={"api_port": port})
        configure(settings)
    try:
        serve(settings, echo=typer.echo, exit_watchdog_seconds=45.0)
    except (RuntimeError, ValueError) as exc:
        fail(str(exc))


@server_app.command("start")
def server_start() -> None:
    """Start the local Prefect server (or find it running)."""
    try:
        api = ensure_server()
    except PrefectServerError as exc:
        fail(str(exc))
    typer.echo(f"Prefect API: {api}\nPrefect UI:  {ui_url(api)}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server started by this tool."""
    stopped = stop_background_clearances()
    if stopped:
        typer.echo(
            f"stopped {stopped} background clearance run(s) (their declarations keep their state; `customs decide` still works)"
        )
    typer.echo("Prefect server stopped" if stop_server() else "no Prefect server of ours was running")
