"""The local Prefect server the CLI records flow runs in (SQLite under the data directory).

Not Prefect's ephemeral mode: that takes 20-30 s to start and drops run records at exit. The server
is started once, detached, and reused by later commands; ``customs server stop`` stops it.

Behind a login (issue 23): the server demands Prefect's basic authentication (PREFECT_SERVER_API_AUTH_STRING) and
every client of the project presents it (PREFECT_API_AUTH_STRING): CUSTOMS_PREFECT_AUTH_STRING, else a login
generated on first need and kept in data_dir/prefect-auth (0600). A server asked to listen on an address other
hosts reach with no login is refused at start.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.settings import (
    PREFECT_API_AUTH_STRING,
    PREFECT_API_URL,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    temporary_settings,
)

from customs.core.files import open_private, private_dir, secret_file
from customs.core.settings import Settings, get_settings

_log = logging.getLogger("customs.prefect_server")


class PrefectServerError(RuntimeError):
    pass


class PrefectServerRefused(PrefectServerError):
    """A Prefect server this project will not start as configured (open to the network with no login)."""


# ----------------------------------------------------------------------------------------------
# The login

AUTH_USER = "customs"


def auth_file(settings: Settings) -> Path:
    return settings.data_dir / "prefect-auth"


def server_auth_string(settings: Settings) -> str | None:
    """The login the local Prefect server demands: CUSTOMS_PREFECT_AUTH_STRING, else ``customs:<32 random url-safe
    characters>`` kept in data_dir/prefect-auth (0600), made on first need; ``None`` when the setting is empty (no
    login: loopback only)."""
    if settings.prefect_auth_string is not None:
        return settings.prefect_auth_string.get_secret_value() or None
    return secret_file(auth_file(settings), lambda: f"{AUTH_USER}:{secrets.token_urlsafe(24)}")


_warned: set[str] = set()


def client_auth_string(settings: Settings, api_url: str) -> str | None:
    """The login this project's clients present to ``api_url``: CUSTOMS_PREFECT_AUTH_STRING; else Prefect's own
    PREFECT_API_AUTH_STRING (environment or profile); else, for the local server, its login (made now if need be);
    else the login kept in data_dir/prefect-auth, when this host started the server. A configured API with none of
    them: warned about once (its runs, logs and block secrets are open to whoever reaches it), not refused."""
    if settings.prefect_auth_string is not None:
        return settings.prefect_auth_string.get_secret_value() or None
    prefect_own = PREFECT_API_AUTH_STRING.value()
    if prefect_own:
        return str(prefect_own)
    if configured_api_url(settings) is None and api_url == local_api_url(settings):
        return server_auth_string(settings)
    try:
        return auth_file(settings).read_text(encoding="utf-8").strip() or None
    except OSError:
        pass
    if api_url not in _warned:
        _warned.add(api_url)
        message = (
            f"the Prefect API {api_url} is used with no login: set CUSTOMS_PREFECT_AUTH_STRING=user:password (the "
            "server's PREFECT_SERVER_API_AUTH_STRING; `customs server start` keeps it in data_dir/prefect-auth), or "
            "anyone who reaches that API can read and change every run, its logs and the block secrets"
        )
        _log.warning(message)
    return None


def login_hint(settings: Settings) -> str:
    """Where ops staff find the line to type into the Prefect UI's login."""
    if settings.prefect_auth_string is not None:
        return (
            "the user:password of CUSTOMS_PREFECT_AUTH_STRING"
            if settings.prefect_auth_string.get_secret_value()
            else "none (CUSTOMS_PREFECT_AUTH_STRING is empty)"
        )
    if PREFECT_API_AUTH_STRING.value() and configured_api_url(settings) is not None:
        return "the user:password of PREFECT_API_AUTH_STRING"
    return f"the whole line (user:password) in {auth_file(settings)}"


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(host: str, auth_string: str | None) -> None:
    """Refuse a Prefect server listening on ``host`` (anything but a loopback address) with no login: its API is
    the whole of Prefect (resume a waiting declaration, read the block secrets, create runs), and so is its UI."""
    if auth_string or is_loopback(host):
        return
    raise PrefectServerRefused(
        f"the Prefect server would listen on {host}, an address other hosts reach, with no login: anyone there could "
        "resume or cancel clearance runs and read the block secrets. Unset CUSTOMS_PREFECT_AUTH_STRING (a login is "
        "then generated and kept in data_dir/prefect-auth) or set it to user:password; or set "
        "CUSTOMS_PREFECT_HOST=127.0.0.1"
    )


def check_login(api_url: str, auth_string: str | None, timeout: float = 5.0) -> None:
    """A clear error when the server at ``api_url`` refuses this login (``/admin/version``, what the UI asks
    first); nothing when it takes it or does not answer (the caller's own requests then say so)."""
    headers = {}
    if auth_string:
        headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode("utf-8")).decode("ascii")
    try:
        status = httpx.get(f"{api_url.rstrip('/')}/admin/version", headers=headers, timeout=timeout).status_code
    except httpx.HTTPError:
        return
    if status == 401:
        given = "no login" if not auth_string else f"the login of user {auth_string.partition(':')[0]!r}"
        raise PrefectServerError(
            f"the Prefect API {api_url} refuses {given} (401): set CUSTOMS_PREFECT_AUTH_STRING to the server's "
            "user:password (its PREFECT_SERVER_API_AUTH_STRING; for a server `customs server start` started, the line "
            "in its data_dir/prefect-auth)"
        )


def client_environment(settings: Settings, api_url: str) -> dict[str, str]:
    """The environment of a process this project starts to talk to ``api_url`` (e.g. `prefect worker start`)."""
    env = dict(os.environ, PREFECT_API_URL=api_url)
    auth = client_auth_string(settings, api_url)
    if auth:
        env["PREFECT_API_AUTH_STRING"] = auth
    return env


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
    auth = server_auth_string(settings)
    if auth:  # the server demands it; its own clients (the services calling the API) present it
        env.update(PREFECT_SERVER_API_AUTH_STRING=auth, PREFECT_API_AUTH_STRING=auth)
    else:
        env.pop("PREFECT_SERVER_API_AUTH_STRING", None)
        env.pop("PREFECT_API_AUTH_STRING", None)
    return env


Progress = Callable[[str], AbstractContextManager]


def ensure_server(settings: Settings | None = None, *, wait_seconds: float = 90.0, progress: Progress | None = None) -> str:
    """The API URL to use: a configured one, or the local server (started now if it is not running).

    ``progress(what)``: a context manager around the wait for a server started here (the CLI's
    customs.cli.progress.waiting: what it waits for and the seconds so far; a first start takes 10-25 s)."""
    settings = settings or get_settings()
    configured = configured_api_url(settings)
    if configured:
        if not is_healthy(configured):
            raise PrefectServerError(f"the configured Prefect API {configured} does not answer /health")
        check_login(configured, client_auth_string(settings, configured))
        return configured
    api_url = local_api_url(settings)
    if is_healthy(api_url):
        check_login(api_url, client_auth_string(settings, api_url))
        return api_url
    check_exposure(settings.prefect_host, server_auth_string(settings))
    if _port_taken(settings.prefect_port, settings.prefect_host):
        raise PrefectServerError(
            f"port {settings.prefect_port} on {settings.prefect_host} is taken by something that is not a Prefect server; "
            "free it or set CUSTOMS_PREFECT_PORT"
        )
    home = private_dir(prefect_home(settings))
    prefect_bin = Path(sys.executable).with_name("prefect")
    command = [str(prefect_bin), "server", "start", "--host", settings.prefect_host, "--port", str(settings.prefect_port)]
    log_file = open_private(home / "server.log")
    process = subprocess.Popen(
        command,
        env=server_environment(settings),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        umask=0o077,  # its SQLite database and everything else it writes: the service's user only
    )
    log_file.close()
    (home / "server.pid").write_text(str(process.pid))
    what = f"waiting for the Prefect server to answer at {api_url} (started now; its log: {home / 'server.log'})"
    with (progress or nullcontext)(what):
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
def prefect_api(api_url: str, settings: Settings | None = None) -> Iterator[None]:
    """Record flow runs in ``api_url``, with this project's login for it (``client_auth_string``), for the duration
    of the block: every Prefect client made inside it (and in threads that copy its context) presents it."""
    updates: dict[Any, Any] = {PREFECT_API_URL: api_url, PREFECT_SERVER_ANALYTICS_ENABLED: False}
    auth = client_auth_string(settings or get_settings(), api_url)
    if auth:
        updates[PREFECT_API_AUTH_STRING] = auth
    with temporary_settings(updates=updates):
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
    key = f"{PREFECT_API_URL.value() or ''} {PREFECT_API_AUTH_STRING.value() or ''}"
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = get_client(sync_client=True)
                client.__enter__()
                _clients[key] = client
    return client
