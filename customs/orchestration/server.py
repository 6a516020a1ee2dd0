"""The local Prefect server the CLI records flow runs in (SQLite under the data directory, loopback only).

Not Prefect's ephemeral mode: that takes 20-30 s to start and drops run records at exit. The server
is started once, detached, and reused by later commands; ``customs server stop`` stops it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

from customs.core.settings import Settings, get_settings

_log = logging.getLogger("customs.prefect_server")


class PrefectServerError(RuntimeError):
    pass


def prefect_home(settings: Settings) -> Path:
    return settings.data_dir / "prefect"


def local_api_url(settings: Settings) -> str:
    return f"http://{settings.prefect_host}:{settings.prefect_port}/api"


def configured_api_url(settings: Settings) -> str | None:
    """CUSTOMS_PREFECT_API_URL, else Prefect's own PREFECT_API_URL (environment, profile or test harness)."""
    if settings.prefect_api_url:
        return settings.prefect_api_url
    return PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL") or None


def running_api_url(settings: Settings) -> str | None:
    """The Prefect API flow runs are recorded in, if one is up (never starts a server)."""
    configured = configured_api_url(settings)
    if configured:
        return configured
    local = local_api_url(settings)
    return local if is_healthy(local) else None


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _port_taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def server_environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(prefect_home(settings)),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_API_HOST=settings.prefect_host,
        PREFECT_SERVER_API_PORT=str(settings.prefect_port),
        PREFECT_API_URL=local_api_url(settings),
        PREFECT_UI_API_URL=local_api_url(settings),
        # the recorder writes task runs in larger batches: the UI keeps up with a busy clearance
        PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE=os.environ.get(
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE", "100"
        ),
        PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE=os.environ.get(
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE", "100"
        ),
    )
    if settings.prefect_database_url:  # Prefect's own database on PostgreSQL instead of SQLite under PREFECT_HOME
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = settings.prefect_sqlalchemy_url
    return env


def ensure_server(settings: Settings | None = None, *, wait_seconds: float = 90.0) -> str:
    """The API URL to use: a configured one, or the local server (started now if it is not running)."""
    settings = settings or get_settings()
    configured = configured_api_url(settings)
    if configured:
        if not is_healthy(configured):
            raise PrefectServerError(f"the configured Prefect API {configured} does not answer /health")
        return configured
    api_url = local_api_url(settings)
    if is_healthy(api_url):
        return api_url
    if _port_taken(settings.prefect_port, settings.prefect_host):
        raise PrefectServerError(
            f"port {settings.prefect_port} on {settings.prefect_host} is taken by something that is not a Prefect server; "
            "free it or set CUSTOMS_PREFECT_PORT"
        )
    home = prefect_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    prefect_bin = Path(sys.executable).with_name("prefect")
    command = [str(prefect_bin), "server", "start", "--host", settings.prefect_host, "--port", str(settings.prefect_port)]
    log_file = open(home / "server.log", "ab")
    process = subprocess.Popen(
        command,
        env=server_environment(settings),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (home / "server.pid").write_text(str(process.pid))
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PrefectServerError(f"the Prefect server exited with code {process.returncode}; see {home / 'server.log'}")
        if is_healthy(api_url, timeout=1.0):
            return api_url
        time.sleep(0.5)
    raise PrefectServerError(f"the Prefect server did not answer within {wait_seconds:.0f} s; see {home / 'server.log'}")


def stop_server(settings: Settings | None = None) -> bool:
    settings = settings or get_settings()
    pid_file = prefect_home(settings) / "server.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


class ServerSupervisor:
    """Keeps the local Prefect server that ``customs serve`` started alive: checked every ``interval`` seconds;
    when it has not answered for ``grace`` seconds (its process died, or hangs), it is stopped and started again
    on the same port and database. A configured server (CUSTOMS_PREFECT_API_URL) is someone else's: not touched."""

    def __init__(self, settings: Settings, *, interval: float = 5.0, grace: float = 15.0, log=None):
        self.settings = settings
        self.interval = interval
        self.grace = grace
        self.restarts = 0
        self.last_error: str | None = None
        self._log = log or _log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def supervising(self) -> bool:
        return configured_api_url(self.settings) is None

    def start(self) -> ServerSupervisor:
        if self.supervising:
            self._thread = threading.Thread(target=self._run, name="prefect-server-supervisor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)

    def _run(self) -> None:
        api_url = local_api_url(self.settings)
        silent_since: float | None = None
        while not self._stop.wait(self.interval):
            if is_healthy(api_url, timeout=2.0):
                silent_since = None
                continue
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since < self.grace:
                continue
            self._log.error("the Prefect server at %s has not answered for %.0f s: restarting it", api_url, self.grace)
            try:
                stop_server(self.settings)
                ensure_server(self.settings)
                self.restarts += 1
                silent_since = None
                self._log.warning("the Prefect server is back (restart %d)", self.restarts)
            except Exception as exc:  # tried again at the next check
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self._log.error("the Prefect server could not be restarted: %s", self.last_error)


@contextmanager
def prefect_api(api_url: str) -> Iterator[None]:
    """Record flow runs in ``api_url`` for the duration of the block."""
    with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        yield


def ui_url(api_url: str) -> str:
    return api_url.rstrip("/").removesuffix("/api")


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def shared_client():
    """One long-lived synchronous Prefect client per API URL, shared by threads.

    `get_client()` builds a new HTTP client each time, and with it an SSL context (loading the system's
    CA certificates): about 20 ms of CPU, which dominated the in-process worker's profile when it was
    done for every poll, every intake and every run label.
    """
    url = PREFECT_API_URL.value() or ""
    client = _clients.get(url)
    if client is None:
        with _clients_lock:
            client = _clients.get(url)
            if client is None:
                client = get_client(sync_client=True)
                client.__enter__()
                _clients[url] = client
    return client
