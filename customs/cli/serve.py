"""`customs serve`: the Prefect server, the deployments of prefect.yaml, the worker that runs them, and the
intake API, in one process (the composition root: the one place that wires the API to orchestration)."""

from __future__ import annotations

import contextvars
import faulthandler
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import uvicorn

from customs.api import create_app
from customs.api.http11 import HEADER_BYTES, intake_protocol
from customs.cli.hints import trust_summary
from customs.cli.progress import waiting
from customs.core.db import init_db
from customs.core.files import private_umask, tighten_data_dir
from customs.core.settings import Settings, get_settings
from customs.orchestration.decisions import resume_decided_runs, resume_waiting_runs
from customs.orchestration.deployments import apply_project
from customs.orchestration.server import ServerSupervisor, ensure_server, login_hint, prefect_api, ui_url
from customs.orchestration.starting import ClearanceStarter
from customs.orchestration.timers import schedule_print_timers
from customs.orchestration.upkeep import PrefectReadiness, ProjectKeeper, keep_project
from customs.orchestration.worker import ClearanceWorker, WorkerThread
from customs.services.audit_anchors import AnchorRefused, ensure_anchor_key
from customs.services.queries import owed_clearances
from customs.services.restore import restore_check


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def intake_server(app, settings: Settings) -> uvicorn.Server:
    """The intake API's uvicorn server. log_config=None: uvicorn's own logging set-up (dictConfig) shuts down
    every existing handler, and flushing Prefect's API log handler then stops Prefect's events service for
    the whole process (the worker's events were refused: "Cannot put items in a stopped service instance").
    uvicorn's loggers go through Prefect's handlers instead.

    Slow clients (issue 25): request headers must arrive within api_header_seconds (customs.api.http11; h11 has
    no such limit of its own) and be at most 16 KiB; a kept-alive connection is closed after 5 s of silence;
    beyond api_max_connections connections or requests at once uvicorn answers 503. The time limits on bodies
    are the API's own (customs.api.limits)."""
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        log_config=None,
        lifespan="on",
        http=intake_protocol(settings.api_header_seconds),
        h11_max_incomplete_event_size=HEADER_BYTES,
        timeout_keep_alive=5,
        limit_concurrency=settings.api_max_connections,
    )
    return uvicorn.Server(config)


def serve(
    settings: Settings | None = None,
    *,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
    echo=None,
    exit_watchdog_seconds: float | None = None,
    with_worker: bool = True,
    progress: Callable[[str], AbstractContextManager] | None = None,
) -> None:
    """Start everything and block until ``stop`` is set (or Ctrl-C, or SIGTERM).

    ``exit_watchdog_seconds`` (the CLI's, which owns the process): once stopping has begun, a shutdown or
    interpreter exit that hangs that long writes the stacks of all threads to stderr and ends the process.
    ``progress(what)``: around each step that takes seconds (the Prefect server's start, the deployments, the
    API's start), what it waits for and for how long (default: customs.cli.progress.waiting through ``echo``)."""
    if echo is None:

        def echo(*args):  # stdout may be a file: flushed at once, so the log shows where it stands
            print(*args, flush=True)

    if progress is None:

        def progress(what: str) -> AbstractContextManager:
            return waiting(what, echo=echo, grace=0)

    settings = settings or get_settings()
    private_umask()  # the databases, logs, keys and Prefect's files: the service's user only
    tighten_data_dir(settings.data_dir)
    if not port_free(settings.api_host, settings.api_port):
        raise SystemExit(
            f"port {settings.api_port} on {settings.api_host} is taken: the intake API cannot start "
            "(set CUSTOMS_API_PORT, or stop what listens there)"
        )
    init_db(settings)
    restored = restore_check(settings=settings)
    echo(f"Restore check: {restored.summary()}")
    echo(f"Trust:         {trust_summary(settings)}")
    try:  # the anchor key, made on the first start: its SHA-256 printed, to be pinned in the configuration
        for line in ensure_anchor_key(settings).lines():
            echo(line)
    except AnchorRefused as exc:
        raise SystemExit(f"audit anchors: {exc}") from None
    api_url = ensure_server(settings, progress=progress)
    supervisor = ServerSupervisor(settings).start()  # the local Prefect server, restarted if it dies
    stop = stop or threading.Event()
    with prefect_api(api_url, settings):  # the worker, the starter and the API's calls to Prefect: with the login
        with progress(f"putting the work pool, the deployments and the automations on the Prefect server {api_url}"):
            project = apply_project(settings)
        for note in project.notes:
            echo(note)
        # The project's state on the Prefect server is checked by this host and re-created when lost (issue 26):
        # by the worker's keeper, or by one of its own when this process has no worker.
        worker = WorkerThread(ClearanceWorker(project.pool.name, keeps_project=True)) if with_worker else None
        keeper = None if with_worker else ProjectKeeper(settings, first_check=False).start()
        if worker is not None:
            with progress(f"starting the clearance worker on work pool {project.pool.name}"):
                worker.start()
        deployments = project.deployments
        app = create_app()
        starter = ClearanceStarter(
            deployments["clearance"][0],
            owed=owed_clearances,
            on_reconnect=resume_decided_runs,
            on_missing_deployment=lambda: keep_project(settings, noticed_by="the clearance starter (deployment missing)"),
        )
        starter.start()  # first: the clearances owed from before (this process, or another, died with starts queued)
        if restored.behind:  # put back at an earlier step by a restore: their earlier runs ended elsewhere
            starter.restart([d["application_id"] for d in restored.behind], f"restore:{restored.checked_at:%Y%m%dT%H%M%S}")
        app.state.start_clearance = starter
        app.state.dependencies["prefect"] = PrefectReadiness(api_url, settings, starter=starter.status)
        app.state.decision_given = _decision_given
        app.state.print_requested = schedule_print_timers
        server = intake_server(app, settings)
        server.install_signal_handlers = lambda: None  # Ctrl-C is ours: stop the worker and the API together
        api_thread = threading.Thread(target=contextvars.copy_context().run, args=(server.run,), name="intake-api", daemon=True)
        with progress(f"starting the intake API on {settings.api_host}:{settings.api_port}"):
            api_thread.start()
            for _ in range(100):
                if server.started:
                    break
                time.sleep(0.1)
        echo(f"Prefect UI:   {ui_url(api_url)}/runs  (login: {login_hint(settings)})")
        echo(f"Prefect API:  {api_url}")
        echo(f"Intake API:   http://{settings.api_host}:{settings.api_port}/v1  (OpenAPI: /docs, /openapi.json)")
        echo(f"Deployments:  {', '.join(deployments)} (work pool {project.pool.name})")
        echo(
            "Worker:       none in this process (customs worker, or prefect worker start --type customs-thread, elsewhere)"
            if worker is None
            else f"Worker:       {worker.worker.name} (type {worker.worker.type}): "
            f"up to {settings.worker_concurrency} runs at once "
            "in this process"
        )
        echo("Ctrl-C (or SIGTERM) stops the API and the worker (the Prefect server keeps running: customs server stop)")
        previous = {}
        if threading.current_thread() is threading.main_thread():
            # Our own handlers: a process started in the background by a non-interactive shell inherits SIGINT
            # ignored (Python then never raises KeyboardInterrupt), and service managers stop with SIGTERM.
            def on_signal(signum, frame):
                if not stop.is_set():
                    echo(f"stopping ({signal.Signals(signum).name})...")
                stop.set()

            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, on_signal)
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set():
                stop.wait(0.5)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if exit_watchdog_seconds:
                faulthandler.dump_traceback_later(exit_watchdog_seconds, exit=True, file=sys.stderr)
            stop.set()
            server.should_exit = True
            if worker is not None:
                worker.stop(wait_seconds=15.0)
            starter.stop()
            if keeper is not None:
                keeper.stop()
            supervisor.stop()
            api_thread.join(5)
            echo("stopped")


def _decision_given(application_id: str) -> None:
    """The API recorded an official's signed decision: wake the flow run waiting for it, if any."""
    resume_waiting_runs(application_id, settle_seconds=2.0)
