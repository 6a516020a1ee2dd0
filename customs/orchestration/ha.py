"""The Prefect server in its documented high-availability shape, started and stopped by `customs server start
--ha` / `customs server stop`.

- its database on PostgreSQL (CUSTOMS_PREFECT_DATABASE_URL), migrated once before anything starts;
- two (or more) API processes, ``prefect server start --no-services``, one per port of
  CUSTOMS_PREFECT_HA_PORTS on CUSTOMS_PREFECT_HOST, started one after another (two at once race on the first
  migration's block registration);
- one process for the background services (scheduler, late runs, triggers of the automations, event
  persister...), ``prefect server services start``;
- Redis (CUSTOMS_REDIS_URL) through the ``prefect-redis`` package for what the processes share: event
  messaging and its cache, causal ordering, concurrency leases, the background-task queue (Docket) and the
  worker-channel cleanup queue.

Clients (the intake process, workers) are given one API each, or a load balancer in front of them. Every
process gets the login of ``server_environment`` (PREFECT_SERVER_API_AUTH_STRING): each API process demands it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from customs.core.files import open_private, private_dir
from customs.core.settings import Settings
from customs.orchestration.server import (
    PrefectServerError,
    check_exposure,
    check_login,
    is_healthy,
    prefect_home,
    server_auth_string,
    server_environment,
)


def ha_home(settings: Settings) -> Path:
    return prefect_home(settings) / "ha"


def api_urls(settings: Settings) -> list[str]:
    return [f"http://{settings.prefect_host}:{port}/api" for port in settings.prefect_ha_ports]


def ha_environment(settings: Settings) -> dict[str, str]:
    if not settings.prefect_database_url or not settings.prefect_database_url.startswith(("postgresql://", "postgres://")):
        raise PrefectServerError(
            "the high-availability Prefect server needs PostgreSQL: set CUSTOMS_PREFECT_DATABASE_URL=postgresql://..."
        )
    redis = urlparse(settings.redis_url)
    if redis.scheme != "redis" or not redis.hostname:
        raise PrefectServerError(f"CUSTOMS_REDIS_URL must be redis://host:port/db; {settings.redis_url!r} given")
    host, port, db = redis.hostname, str(redis.port or 6379), (redis.path or "/0").strip("/") or "0"
    env = server_environment(settings)
    env.update(
        PREFECT_API_DATABASE_MIGRATE_ON_START="false",
        PREFECT_MESSAGING_BROKER="prefect_redis.messaging",
        PREFECT_MESSAGING_CACHE="prefect_redis.messaging",
        PREFECT_SERVER_EVENTS_CAUSAL_ORDERING="prefect_redis.ordering",
        PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect_redis.lease_storage",
        PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE="prefect_redis.cleanup_queue",
        PREFECT_SERVER_DOCKET_URL=f"redis://{host}:{port}/{db}",
        PREFECT_REDIS_MESSAGING_HOST=host,
        PREFECT_REDIS_MESSAGING_PORT=port,
        PREFECT_REDIS_MESSAGING_DB=db,
        PREFECT_REDIS_WORKER_CLEANUP_QUEUE_HOST=host,
        PREFECT_REDIS_WORKER_CLEANUP_QUEUE_PORT=port,
        PREFECT_REDIS_WORKER_CLEANUP_QUEUE_DB=db,
        PREFECT_API_URL=api_urls(settings)[0],
    )
    env.pop("PREFECT_SERVER_API_PORT", None)
    return env


def _spawn(name: str, command: list[str], env: dict[str, str], home: Path) -> subprocess.Popen:
    with open_private(home / f"{name}.log") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,
        )
    (home / f"{name}.pid").write_text(str(process.pid))
    return process


def start_ha(settings: Settings, *, wait_seconds: float = 120.0) -> list[str]:
    """Start the high-availability Prefect server; returns the URLs of its API processes."""
    env = ha_environment(settings)
    home = private_dir(ha_home(settings))
    prefect = str(Path(sys.executable).with_name("prefect"))
    urls = api_urls(settings)
    auth = server_auth_string(settings)
    if all(is_healthy(url) for url in urls):
        for url in urls:
            check_login(url, auth)
        return urls
    check_exposure(settings.prefect_host, auth)
    migrated = subprocess.run(
        [prefect, "server", "database", "upgrade", "-y"], env=env, capture_output=True, text=True, timeout=wait_seconds
    )
    if migrated.returncode != 0:
        raise PrefectServerError(f"the Prefect database could not be migrated: {(migrated.stdout + migrated.stderr)[-2000:]}")
    for port, url in zip(settings.prefect_ha_ports, urls, strict=True):
        if is_healthy(url):
            continue
        process = _spawn(
            f"api-{port}",
            [prefect, "server", "start", "--host", settings.prefect_host, "--port", str(port), "--no-services"],
            env,
            home,
        )
        _wait(process, url, wait_seconds, home / f"api-{port}.log")
    if not _alive(home / "services.pid"):
        _spawn("services", [prefect, "server", "services", "start"], env, home)
    return urls


def _wait(process: subprocess.Popen, url: str, wait_seconds: float, log: Path) -> None:
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PrefectServerError(f"a Prefect API process exited with code {process.returncode}; see {log}")
        if is_healthy(url, timeout=1.0):
            return
        time.sleep(0.5)
    raise PrefectServerError(f"the Prefect API {url} did not answer within {wait_seconds:.0f} s; see {log}")


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def stop_ha(settings: Settings, *, wait_seconds: float = 20.0) -> int:
    """Stop the processes of the high-availability server (SIGTERM, then SIGKILL); returns how many were running."""
    home = ha_home(settings)
    pids = []
    for pid_file in sorted(home.glob("*.pid")) if home.is_dir() else []:
        try:
            pid = int(pid_file.read_text())
            os.killpg(pid, signal.SIGTERM)
            pids.append(pid)
        except (OSError, ValueError):
            pass
        pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + wait_seconds
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.2)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
    return len(pids)
