"""The local Prefect server; `customs serve` (everything at once); `customs deploy` and `customs worker` (apart)."""

from __future__ import annotations

import signal
from contextlib import AbstractContextManager
from typing import Annotated, Optional

import anyio
import typer

from customs.cli.hints import trust_summary
from customs.cli.progress import waiting
from customs.cli.root import ExitCode, fail

with waiting("loading Prefect and the service", done="loaded"):  # seconds on a busy machine: said, not silent
    from customs.cli.serve import serve
    from customs.core.db import init_db
    from customs.core.files import tighten_data_dir
    from customs.core.settings import configure, get_settings
    from customs.orchestration.deployments import apply_project
    from customs.orchestration.ha import start_ha, stop_ha
    from customs.orchestration.server import (
        PrefectServerError,
        PrefectServerRefused,
        ensure_server,
        login_hint,
        prefect_api,
        stop_server,
        ui_url,
    )
    from customs.orchestration.worker import WORKER_TYPE, ClearanceWorker
    from customs.services.authority import announce
    from customs.services.restore import restore_check

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

server_app = typer.Typer(help="The local Prefect server that records flow runs.", no_args_is_help=True)
commands.add_typer(server_app, name="server")


def every_step(what: str) -> AbstractContextManager:
    """`customs serve` says each step of its start, however short: its log shows how the start went."""
    return waiting(what, grace=0)


@commands.command("serve")
def serve_command(
    port: Annotated[Optional[int], typer.Option(help="Port of the intake API (default CUSTOMS_API_PORT, 8080).")] = None,
    worker: Annotated[
        bool,
        typer.Option("--worker/--no-worker", help="Run a clearance worker in this process (--no-worker: workers run elsewhere)."),
    ] = True,
) -> None:
    """Run it all: the Prefect server (or PREFECT_API_URL), the deployments of prefect.yaml, the worker, the intake API."""
    settings = get_settings()
    if port is not None:
        settings = settings.model_copy(update={"api_port": port})
        configure(settings)
    typer.echo(f"authority's documents: {announce(settings)}")  # unsigned or refused: also logged, once
    try:
        serve(settings, echo=typer.echo, exit_watchdog_seconds=45.0, with_worker=worker, progress=every_step)
    except PrefectServerRefused as exc:
        fail(str(exc), ExitCode.PROBLEM)
    except PrefectServerError as exc:
        fail(str(exc), ExitCode.UNAVAILABLE)
    except (RuntimeError, ValueError) as exc:
        fail(str(exc), ExitCode.PROBLEM)


@server_app.command("start")
def server_start(
    ha: Annotated[
        bool,
        typer.Option(
            "--ha",
            help="The high-availability shape: API processes on CUSTOMS_PREFECT_HA_PORTS (--no-services), one services "
            "process, PostgreSQL (CUSTOMS_PREFECT_DATABASE_URL) and Redis (CUSTOMS_REDIS_URL).",
        ),
    ] = False,
) -> None:
    """Start the local Prefect server (or find it running), behind its login (CUSTOMS_PREFECT_AUTH_STRING)."""
    settings = get_settings()
    tighten_data_dir(settings.data_dir)
    try:
        apis = start_ha(settings) if ha else [ensure_server(settings, progress=waiting)]
    except PrefectServerRefused as exc:
        fail(str(exc), ExitCode.PROBLEM)
    except PrefectServerError as exc:
        fail(str(exc), ExitCode.UNAVAILABLE)
    for api in apis:
        typer.echo(f"Prefect API: {api}   UI: {ui_url(api)}")
    typer.echo(f"UI login: {login_hint(settings)}")
    if ha:
        typer.echo(
            f"give each client one of them: CUSTOMS_PREFECT_API_URL={apis[0]} (or a load balancer in front), and the "
            "login: CUSTOMS_PREFECT_AUTH_STRING"
        )


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server started by this tool."""
    ha = stop_ha(get_settings())
    if ha:
        typer.echo(f"high-availability Prefect server stopped ({ha} processes)")
    typer.echo("Prefect server stopped" if stop_server() else "no Prefect server of ours was running")


@commands.command("deploy")
def deploy_command() -> None:
    """Put the work pool, the deployments and the automations on a Prefect server run apart.

    The server of CUSTOMS_PREFECT_API_URL or PREFECT_API_URL, else the local one: the work pool and its queues
    (created when missing), the deployments of prefect.yaml, the automations. What `customs serve` does at start."""
    try:
        api_url = ensure_server(progress=waiting)
        with prefect_api(api_url):
            project = apply_project()
    except PrefectServerRefused as exc:
        fail(str(exc), ExitCode.PROBLEM)
    except PrefectServerError as exc:
        fail(str(exc), ExitCode.UNAVAILABLE)
    except ValueError as exc:
        fail(str(exc), ExitCode.PROBLEM)
    for note in project.notes:
        typer.echo(note)
    typer.echo(f"work pool {project.pool.name} (type {project.pool.type}); deployments: {', '.join(project.deployments)}")
    typer.echo(f"start workers with: customs worker   (or: prefect worker start --pool {project.pool.name} --type {WORKER_TYPE})")


@commands.command("worker")
def worker_command(
    pool: Annotated[Optional[str], typer.Option(help="Work pool to serve (default CUSTOMS_WORKER_POOL, customs).")] = None,
    limit: Annotated[
        Optional[int], typer.Option(help="Runs at once in this process (default CUSTOMS_WORKER_CONCURRENCY).")
    ] = None,
    name: Annotated[Optional[str], typer.Option(help="Worker name shown in the UI (default host-pid).")] = None,
) -> None:
    """A clearance worker in this process: the work pool's flow runs, in threads, until Ctrl-C or SIGTERM.

    For the Prefect API of CUSTOMS_PREFECT_API_URL or PREFECT_API_URL (else the local server); on Ctrl-C or SIGTERM
    the runs in progress finish."""
    settings = get_settings()
    tighten_data_dir(settings.data_dir)
    init_db(settings)
    typer.echo(f"restore check: {restore_check(settings=settings).summary()}")
    typer.echo(f"trust: {trust_summary(settings)}")
    try:
        api_url = ensure_server(settings, progress=waiting)
    except PrefectServerRefused as exc:
        fail(str(exc), ExitCode.PROBLEM)
    except PrefectServerError as exc:
        fail(str(exc), ExitCode.UNAVAILABLE)
    with prefect_api(api_url, settings):
        # the project's pool: this host also keeps the project's state on the Prefect server (re-created if lost)
        keeps = (pool or settings.worker_pool) == settings.worker_pool
        worker = ClearanceWorker(pool or settings.worker_pool, limit=limit, name=name, keeps_project=keeps)
        typer.echo(f"worker {worker.name} (type {WORKER_TYPE}) serves work pool {worker._work_pool_name} of {api_url}")
        typer.echo(f"authority's documents: {announce(settings)}")
        # SIGTERM (service managers) stops it like Ctrl-C: Prefect's worker then lets the runs in progress finish.
        signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background by a shell
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            anyio.run(lambda: worker.start(printer=typer.echo))
        except KeyboardInterrupt:
            typer.echo("stopped")
