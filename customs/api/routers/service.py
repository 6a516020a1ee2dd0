"""The service itself: liveness, and readiness with the state of each dependency (no authentication).

Readiness answers within 1 s: its probes run side by side, each bounded. The database gets 0.8 s (in threads
of its own, never behind the requests that wait for the shared pool); the SMTP server 0.8 s to greet and
answer EHLO and NOOP (remembered for 5 s, so that probes stay cheap); the free space of the data and outbox
folders' disks 0.3 s; the Prefect server 0.8 s under `customs serve` (its state of the project: whether it answers,
with a 5xx or not, and whether the deployments and automations are there; remembered 3 s), else what the
clearance starter last saw.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import anyio
import anyio.to_thread
from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from customs.api.errors import DATABASE_RETRY_AFTER
from customs.api.schemas import HealthOut, ReadinessOut
from customs.core.db import get_engine
from customs.core.settings import get_settings

router = APIRouter(tags=["service"])
_probe_threads = anyio.CapacityLimiter(2)
_disk_threads = anyio.CapacityLimiter(1)
DATABASE_PROBE_SECONDS = 0.8
SMTP_PROBE_SECONDS = 0.8
SMTP_PROBE_REMEMBERED = 5.0
DISK_PROBE_SECONDS = 0.3
_smtp_seen: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}


@router.get("/v1/health", response_model=HealthOut, summary="Liveness: the process answers (no authentication)")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def _database_round_trip() -> None:
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))


async def _database() -> dict[str, Any]:
    started = time.perf_counter()
    with anyio.move_on_after(DATABASE_PROBE_SECONDS) as waited:
        try:
            await anyio.to_thread.run_sync(_database_round_trip, limiter=_probe_threads, abandon_on_cancel=True)
        except Exception as exc:
            return {"state": "down", "detail": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    if waited.cancelled_caught:
        return {"state": "down", "detail": f"no answer within {DATABASE_PROBE_SECONDS} s"}
    return {"state": "up", "ms": round((time.perf_counter() - started) * 1000, 1)}


async def _smtp_conversation(settings, port: int) -> None:
    """The server greets, and answers EHLO and NOOP (a socket that accepts and never speaks is not an SMTP server)."""
    client = aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=port,
        use_tls=settings.smtp_security == "tls",
        start_tls=False,  # the greeting and EHLO say the server works; STARTTLS and login are the dispatcher's
        timeout=SMTP_PROBE_SECONDS,
        cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
    )
    try:
        await client.connect()
        await client.ehlo()
        await client.noop()
        await client.quit()
    finally:
        if client.is_connected:
            client.close()


async def _smtp() -> dict[str, Any]:
    settings = get_settings()
    if not settings.smtp_host:
        return {"state": "not used", "detail": "notices are written as .eml files"}
    port = settings.smtp_port or {"tls": 465, "starttls": 587}.get(settings.smtp_security, 25)
    key = (settings.smtp_host, port)
    seen = _smtp_seen.get(key)
    if seen and time.monotonic() - seen[0] < SMTP_PROBE_REMEMBERED:
        return seen[1]
    started = time.perf_counter()
    try:
        await asyncio.wait_for(_smtp_conversation(settings, port), timeout=SMTP_PROBE_SECONDS)
        state: dict[str, Any] = {"state": "up", "ms": round((time.perf_counter() - started) * 1000, 1)}
    except (TimeoutError, aiosmtplib.SMTPTimeoutError):
        detail = f"{settings.smtp_host}:{port}: no SMTP greeting or answer within {SMTP_PROBE_SECONDS} s"
        state = {"state": "down", "detail": detail}
    except (OSError, aiosmtplib.SMTPException) as exc:
        state = {"state": "down", "detail": f"{settings.smtp_host}:{port}: {type(exc).__name__} {exc}"[:200]}
    _smtp_seen[key] = (time.monotonic(), state)
    return state


def _free_space(folders: list[Path]) -> list[tuple[str, int]]:
    """Free bytes of each distinct disk among ``folders`` (a folder not made yet: its nearest existing parent)."""
    seen: dict[int, tuple[str, int]] = {}
    for folder in folders:
        path = folder.resolve()
        while not path.exists() and path != path.parent:
            path = path.parent
        device = os.stat(path).st_dev
        if device not in seen:
            seen[device] = (str(folder), shutil.disk_usage(path).free)
    return list(seen.values())


async def _disk() -> dict[str, Any]:
    settings = get_settings()
    folders = [settings.data_dir, *([] if settings.smtp_host else [settings.eml_dir])]
    threshold = settings.health_min_free_mb * 1024 * 1024
    with anyio.move_on_after(DISK_PROBE_SECONDS):
        try:
            free = await anyio.to_thread.run_sync(_free_space, folders, limiter=_disk_threads, abandon_on_cancel=True)
        except OSError as exc:
            return {"state": "down", "detail": f"{type(exc).__name__}: {exc}"[:200]}
        low = [(folder, space) for folder, space in free if space < threshold]
        state: dict[str, Any] = {
            "state": "low" if low else "up",
            "free_mb": {folder: round(space / 1024 / 1024, 1) for folder, space in free},
            "threshold_mb": settings.health_min_free_mb,
        }
        if low:
            state["detail"] = "; ".join(
                f"{folder}: {space / 1024 / 1024:.1f} MiB free, below {settings.health_min_free_mb} MiB" for folder, space in low
            )
        return state
    return {"state": "down", "detail": f"the free space could not be read within {DISK_PROBE_SECONDS} s"}


async def _prefect(probe) -> dict[str, Any]:
    """What the process's composition root gave for Prefect (``customs serve``: the Prefect server's state of the
    project, customs.orchestration.upkeep.PrefectReadiness, bounded and remembered there); a plain callable is
    called as it is."""
    if probe is None:
        return {"state": "not used", "detail": "no clearance starter in this process"}
    answer = probe()
    return await answer if inspect.isawaitable(answer) else answer


@router.get(
    "/v1/health/ready",
    response_model=ReadinessOut,
    summary="Readiness: each dependency with its state (no authentication)",
    responses={503: {"model": ReadinessOut, "description": "The database does not answer: submissions cannot be accepted."}},
)
async def ready(request: Request, response: Response) -> dict[str, Any]:
    """``ready``: everything answers. ``degraded``: submissions are accepted, but clearance or notices wait
    (Prefect or SMTP down, Prefect answering 5xx or missing a deployment or an automation, or the disk's free space
    low; they catch up by themselves). ``unavailable`` (503):
    the database does not answer."""
    database, smtp, disk, prefect = await asyncio.gather(  # side by side: within 1 s in all
        _database(), _smtp(), _disk(), _prefect(request.app.state.dependencies.get("prefect"))
    )
    dependencies = {"database": database, "prefect": prefect, "smtp": smtp, "disk": disk}
    if dependencies["database"]["state"] != "up":
        status = "unavailable"
        response.status_code = 503
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER)
    elif any(d["state"] in ("down", "degraded", "low") for d in dependencies.values()):
        status = "degraded"
    else:
        status = "ready"
    return {"status": status, "dependencies": dependencies}
