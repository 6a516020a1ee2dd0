"""The service itself: liveness, and readiness with the state of each dependency (no authentication).

Neither waits on a dependency for long: the database gets 1 s (in threads of its own, never behind the
requests that wait for the shared pool), the SMTP server a TCP connection of 1 s (remembered for 10 s),
and the Prefect server is reported from what the clearance starter last saw (it is never called here).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

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
_smtp_seen: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}


@router.get("/v1/health", response_model=HealthOut, summary="Liveness: the process answers (no authentication)")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def _database_round_trip() -> None:
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))


async def _database() -> dict[str, Any]:
    started = time.perf_counter()
    with anyio.move_on_after(1.0) as waited:
        try:
            await anyio.to_thread.run_sync(_database_round_trip, limiter=_probe_threads, abandon_on_cancel=True)
        except Exception as exc:
            return {"state": "down", "detail": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    if waited.cancelled_caught:
        return {"state": "down", "detail": "no answer within 1 s"}
    return {"state": "up", "ms": round((time.perf_counter() - started) * 1000, 1)}


async def _smtp() -> dict[str, Any]:
    settings = get_settings()
    if not settings.smtp_host:
        return {"state": "not used", "detail": "notices are written as .eml files"}
    port = settings.smtp_port or {"tls": 465, "starttls": 587}.get(settings.smtp_security, 25)
    key = (settings.smtp_host, port)
    seen = _smtp_seen.get(key)
    if seen and time.monotonic() - seen[0] < 10:
        return seen[1]
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(*key), timeout=1.0)
        writer.close()
        state = {"state": "up"}
    except (OSError, TimeoutError) as exc:
        state = {"state": "down", "detail": f"{settings.smtp_host}:{port}: {type(exc).__name__} {exc}"[:200]}
    _smtp_seen[key] = (time.monotonic(), state)
    return state


@router.get(
    "/v1/health/ready",
    response_model=ReadinessOut,
    summary="Readiness: each dependency with its state (no authentication)",
    responses={503: {"model": ReadinessOut, "description": "The database does not answer: submissions cannot be accepted."}},
)
async def ready(request: Request, response: Response) -> dict[str, Any]:
    """``ready``: everything answers. ``degraded``: submissions are accepted, but clearance or notices wait
    (Prefect or SMTP down; they catch up by themselves). ``unavailable`` (503): the database does not answer."""
    prefect = request.app.state.dependencies.get("prefect")
    dependencies = {
        "database": await _database(),
        "prefect": prefect() if prefect else {"state": "not used", "detail": "no clearance starter in this process"},
        "smtp": await _smtp(),
    }
    if dependencies["database"]["state"] != "up":
        status = "unavailable"
        response.status_code = 503
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER)
    elif any(d["state"] == "down" for d in dependencies.values()):
        status = "degraded"
    else:
        status = "ready"
    return {"status": status, "dependencies": dependencies}
