"""The project's state on the Prefect server, kept by every clearance host (issue 26, "Recovery II").

`customs serve` and `customs deploy` put the work pool, its queues, the deployments (with their schedules), the
automations and their webhook block on the Prefect server. When the server's database is lost (a disk, a
`prefect server database reset`, a restore from an older backup), the server comes back empty: no deployment
means no clearance run is started, the job gate's jobs (outbox-dispatch: the acceptance notices) never run,
and no automation fires. Nothing of that raises an alarm by itself.

So every host that owns the project's work (`customs serve`, `customs worker`) runs a ``ProjectKeeper``: every
CUSTOMS_PROJECT_CHECK_SECONDS, and every 5 s while the server does not answer (so at once when it answers again),
a cheap look (a handful of reads) whether each part is there. When one is missing:

- it is logged as an error, recorded as an operations alert (``customs ops``), and readiness says degraded with
  its name until it is back (customs.api.routers.service, through ``project_probe``);
- everything is re-created as ``customs deploy`` does it (``apply_project``): idempotent, and safe with several
  hosts at once (the pool and queues tolerate a create that lost the race; deployments are upserted by name;
  a duplicated automation is deleted by every host in the same way, see automations._one_of_each);
- declarations whose clearance has not ended and that have no clearance run left in Prefect get a new run
  (``restore_clearances``), keyed by the declaration and the new deployment, so that several hosts doing it at
  once create one run between them, and a later loss makes a new one.

The job gate (customs.orchestration.gate) and the clearance starter call ``keep_project`` too, the moment they
find a deployment missing, instead of waiting for the next look.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterTags
from prefect.exceptions import ObjectNotFound

from customs.core.clock import utcnow
from customs.core.settings import Settings, get_settings
from customs.orchestration.automations import (
    CLEARANCE_FAILED,
    CRASH_ORPHANED_RUNS,
    DEADLINE_BREACHED,
    PRINT_OVERDUE,
    WEBHOOK_BLOCK,
)
from customs.orchestration.deployments import DeploymentSpec, apply_project, read_deployments
from customs.orchestration.pool import read_pool
from customs.services.ops_alerts import record_prefect_state_missing
from customs.services.queries import submitted_since, unfinished_clearances
from flows.clearance import start_clearance

log = logging.getLogger("customs.upkeep")

AUTOMATIONS = (CRASH_ORPHANED_RUNS, CLEARANCE_FAILED, DEADLINE_BREACHED, PRINT_OVERDUE)
DOWN_RECHECK_SECONDS = 5.0
_PAGE = 200
_one_at_a_time = threading.Lock()  # the keeper, the gate and the starter of one process: one rebuild at a time
# Runs in flight when the server lost its database end their steps against a server that no longer knows them
# (404): their declarations end up cleared but without a run in Prefect's history. For HISTORY_FOLLOW_UP after a
# rebuild, each check gives every declaration submitted within HISTORY_WINDOW before it and still without a run a
# run of its own (its steps find the work done; it ends in the outcome's state), so the history is whole again.
HISTORY_WINDOW = timedelta(minutes=30)
HISTORY_FOLLOW_UP = timedelta(minutes=5)
_rebuilt: dict[str, Any] = {}  # the last rebuild of this process: the clearance deployment, when


def missing_parts(client: SyncPrefectClient, settings: Settings, specs: list[DeploymentSpec] | None = None) -> list[str]:
    """What of the project the Prefect server lacks, by name (empty: all there). About six reads."""
    specs = specs if specs is not None else read_deployments()
    pool = read_pool(name=settings.worker_pool)
    missing: list[str] = []
    try:
        queues = {q.name for q in client.read_work_queues(work_pool_name=pool.name)}
    except ObjectNotFound:
        missing.append(f"work pool {pool.name}")
    else:
        missing += [f"work queue {pool.name}/{q.name}" for q in pool.queues if q.name not in queues]
    deployed = {
        d.name: d
        for d in client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[s.name for s in specs]))
        )
    }
    for spec in specs:
        deployment = deployed.get(spec.name)
        if deployment is None:
            missing.append(f"deployment {spec.name}")
        elif deployment.work_pool_name != pool.name:
            missing.append(f"deployment {spec.name} on work pool {pool.name}")
        elif len(deployment.schedules or []) < sum(1 for s in spec.schedules if "cron" in s):
            missing.append(f"schedule of deployment {spec.name}")
    present = {a.name for a in client.read_automations()}
    missing += [f"automation {name!r}" for name in AUTOMATIONS if name not in present]
    try:
        client.read_block_document_by_name(WEBHOOK_BLOCK, block_type_slug="webhook", include_secrets=False)
    except ObjectNotFound:
        missing.append(f"webhook block {WEBHOOK_BLOCK!r}")
    return missing


def keep_project(settings: Settings | None = None, *, noticed_by: str) -> list[str]:
    """Check the project's parts on the Prefect server and re-create what is missing (see the module); returns
    what was done (empty: nothing was missing). Raises when the server does not answer."""
    settings = settings or get_settings()
    with _one_at_a_time:
        with get_client(sync_client=True) as client:
            missing = missing_parts(client, settings)
        if not missing:
            return _follow_up()
        log.error(
            "the Prefect server lacks %s (its database lost or reset?), noticed by %s: re-creating them",
            ", ".join(missing),
            noticed_by,
        )
        try:
            record_prefect_state_missing(missing, noticed_by=noticed_by, settings=settings)
        except Exception as exc:  # the database away too: the log says it, the rebuild goes on
            log.warning("the operations alert could not be recorded: %s: %s", type(exc).__name__, exc)
        project = apply_project(settings)
        done = [f"re-created on the Prefect server: {', '.join(missing)}", *project.notes]
        deployment_id = project.deployments["clearance"][0]
        _rebuilt.update(deployment=deployment_id, at=utcnow())
        with get_client(sync_client=True) as client:
            done += restore_clearances(client, deployment_id, since=utcnow() - HISTORY_WINDOW)
        for line in done:
            log.warning("%s", line)
        return done


def _follow_up() -> list[str]:
    """After a rebuild of this process: the runs of the history window still missing (see HISTORY_WINDOW)."""
    if not _rebuilt or utcnow() - _rebuilt["at"] > HISTORY_FOLLOW_UP:
        return []
    with get_client(sync_client=True) as client:
        return restore_clearances(client, _rebuilt["deployment"], since=_rebuilt["at"] - HISTORY_WINDOW, unfinished=False)


def restore_clearances(
    client: SyncPrefectClient, deployment_id: UUID, *, since: datetime | None = None, unfinished: bool = True
) -> list[str]:
    """A new run for each declaration whose clearance has not ended and that has no clearance run in Prefect (lost
    with the server's database), and, with ``since``, for each submitted since then without a run (its history).
    The idempotency key is the declaration and this deployment: hosts restoring at the same moment create one run;
    after a later loss (a new deployment) a new one is made."""
    waiting = unfinished_clearances() if unfinished else []
    if since is not None:
        waiting = list(dict.fromkeys(waiting + submitted_since(since)))
    started = []
    for offset in range(0, len(waiting), _PAGE):
        chunk = waiting[offset : offset + _PAGE]
        with_runs = _with_runs(client, chunk)
        for application_id in chunk:
            if application_id in with_runs:
                continue
            run = start_clearance(
                application_id,
                deployment_id=deployment_id,
                client=client,
                idempotency_key=f"restore:{application_id}:{deployment_id}",
            )
            started.append(f"{application_id}: its clearance run was gone; new run {run.name} ({run.id})")
    return started


def _with_runs(client: SyncPrefectClient, application_ids: list[str]) -> set[str]:
    tags = [f"application:{a}" for a in application_ids]
    found: set[str] = set()
    offset = 0
    while True:
        page = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(any_=tags)), limit=_PAGE, offset=offset)
        for run in page:
            found.update(t.removeprefix("application:") for t in run.tags if t.startswith("application:"))
        if len(page) < _PAGE or found.issuperset(application_ids):
            return found
        offset += _PAGE


class ProjectKeeper:
    """A thread of a host that runs ``keep_project`` every CUSTOMS_PROJECT_CHECK_SECONDS, every 5 s while the
    Prefect server does not answer, and at once on ``wake``. ``on_rebuilt`` is told when something was re-created
    (``customs serve``: the clearance starter takes the new deployment)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        interval: float | None = None,
        on_rebuilt: Callable[[list[str]], Any] | None = None,
        first_check: bool = True,
    ):
        self.settings = settings or get_settings()
        self.interval = interval or self.settings.project_check_seconds
        self.on_rebuilt = on_rebuilt
        self.first_check = first_check
        self.answering: bool | None = None
        self.rebuilds = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ProjectKeeper:
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), name="prefect-project-keeper", daemon=True
        )
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def check(self) -> list[str]:
        try:
            done = keep_project(self.settings, noticed_by="the periodic check of this host")
        except Exception as exc:  # the server away (or the database): checked again within 5 s
            if self.answering is not False:
                log.warning("the project's state on the Prefect server cannot be checked: %s: %s", type(exc).__name__, exc)
            self.answering, self.last_error = False, f"{type(exc).__name__}: {exc}"[:300]
            return []
        self.answering = True
        if done:
            self.rebuilds += 1
            if self.on_rebuilt is not None:
                try:
                    self.on_rebuilt(done)
                except Exception as exc:
                    log.warning("after re-creating the project's state: %s: %s", type(exc).__name__, exc)
        return done

    def _run(self) -> None:
        if not self.first_check:
            self._wake.wait(self.interval)
        while not self._stop.is_set():
            self._wake.clear()
            started = time.monotonic()
            self.check()
            wait = self.interval if self.answering else DOWN_RECHECK_SECONDS
            self._wake.wait(max(0.0, wait - (time.monotonic() - started)))


# ----------------------------------------------------------------------------------------------
# Readiness: what the Prefect server holds of the project, not only whether it answers


PROBE_SECONDS = 0.8  # within readiness's 1 s, side by side with the other probes
PROBE_REMEMBERED = 3.0  # seconds: a load balancer probing every second costs Prefect one look in three


class PrefectReadiness:
    """The ``prefect`` dependency of GET /v1/health/ready (``customs serve`` gives it to the API): ``up``,
    ``degraded`` (the server answers, but with a 5xx, or its Redis is away in the high-availability setup, or a
    part of the project is missing: named in ``missing``) or ``down`` (no answer). A few reads side by side,
    within PROBE_SECONDS, remembered PROBE_REMEMBERED seconds; the clearance starter's figures are added."""

    def __init__(self, api_url: str, settings: Settings, *, starter: Callable[[], dict[str, Any]] | None = None):
        self.api_url = api_url.rstrip("/")
        self.settings = settings
        self.starter = starter
        self._seen: tuple[float, dict[str, Any]] | None = None
        self._deployments = [s.name for s in read_deployments()]

    async def __call__(self) -> dict[str, Any]:
        import asyncio

        seen = self._seen
        if seen is None or time.monotonic() - seen[0] >= PROBE_REMEMBERED:
            started = time.perf_counter()
            try:
                state = await asyncio.wait_for(self._probe(), PROBE_SECONDS)
            except TimeoutError:
                state = {"state": "down", "detail": f"{self.api_url}: no answer within {PROBE_SECONDS} s"}
            state.setdefault("ms", round((time.perf_counter() - started) * 1000, 1))
            self._seen = seen = (time.monotonic(), state)
        answer = dict(seen[1])
        if self.starter is not None:
            starts = self.starter()
            answer.update({k: v for k, v in starts.items() if k not in ("state", "detail")})
            answer["starter"] = starts.get("state")
        return answer

    async def _probe(self) -> dict[str, Any]:
        import asyncio

        import httpx

        from customs.orchestration.server import client_auth_string

        auth = client_auth_string(self.settings, self.api_url)
        login = httpx.BasicAuth(*auth.split(":", 1)) if auth and ":" in auth else None
        pool = self.settings.worker_pool
        async with httpx.AsyncClient(base_url=self.api_url, auth=login, timeout=PROBE_SECONDS) as http:
            calls = [
                http.get("/health"),
                http.post("/deployments/filter", json={"deployments": {"name": {"any_": self._deployments}}}),
                http.post("/automations/filter", json={}),
                http.get(f"/work_pools/{pool}"),
            ]
            try:
                health, deployments, automations, work_pool = await asyncio.gather(*calls)
            except httpx.HTTPError as exc:
                return {"state": "down", "detail": f"{self.api_url}: {type(exc).__name__} {exc}"[:200]}
            redis = await _redis_away(self.settings) if self.settings.prefect_ha else None
        failing = [
            f"{r.request.method} {r.request.url.path} {r.status_code}"
            for r in (health, deployments, automations)
            if r.status_code >= 500
        ]
        if work_pool.status_code >= 500:
            failing.append(f"GET /work_pools/{pool} {work_pool.status_code}")
        if failing or redis:
            detail = "; ".join(
                ([f"the Prefect server answers {', '.join(failing)}"] if failing else []) + ([redis] if redis else [])
            )
            return {"state": "degraded", "detail": detail[:300]}
        if 400 <= max(deployments.status_code, automations.status_code) < 500:
            return {"state": "down", "detail": f"{self.api_url}: refused ({deployments.status_code}): check the login"}
        have = {d["name"] for d in deployments.json()}
        named = {a["name"] for a in automations.json()}
        missing = (
            ([f"work pool {pool}"] if work_pool.status_code == 404 else [])
            + [f"deployment {name}" for name in self._deployments if name not in have]
            + [f"automation {name!r}" for name in AUTOMATIONS if name not in named]
        )
        if missing:
            return {
                "state": "degraded",
                "detail": f"missing on the Prefect server (being re-created): {', '.join(missing)}"[:300],
                "missing": missing,
            }
        return {"state": "up"}


async def _redis_away(settings: Settings) -> str | None:
    """Why the high-availability server's Redis does not serve (None: it answers PING)."""
    try:
        import redis.asyncio as aioredis
    except ImportError:
        return "the redis package is not installed (pip install customs[ha]): its Redis cannot be checked"
    client = aioredis.from_url(settings.redis_url, socket_timeout=PROBE_SECONDS / 2, socket_connect_timeout=PROBE_SECONDS / 2)
    try:
        await client.ping()
    except Exception as exc:
        where = urlparse(settings.redis_url)
        at = f"{where.hostname}:{where.port or 6379}"
        return f"the Redis of the high-availability Prefect server ({at}) does not answer: {type(exc).__name__}"
    finally:
        await client.aclose()
    return None
