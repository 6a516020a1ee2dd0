"""The work pool the deployments are attached to, and its queues, as prefect.yaml describes them.

Prefect enforces what is set on the pool and its queues: which queue is served first (priority) and how
many runs of a queue or of the whole pool run at once (concurrency limits), across every worker. The
values live in prefect.yaml (``definitions.customs_work_pool``); `customs serve` and `customs deploy`
create the pool and the queues that are missing with them, and leave existing ones as operations staff
set them (in the UI, or ``prefect work-queue set-concurrency-limit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.objects import WorkPool
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from customs.core.paths import PREFECT_YAML
from customs.orchestration.worker import WORKER_TYPE, ClearanceWorker


@dataclass(frozen=True)
class QueueSpec:
    name: str
    priority: int
    concurrency_limit: int | None
    description: str


@dataclass(frozen=True)
class PoolSpec:
    name: str
    description: str
    concurrency_limit: int | None
    queues: tuple[QueueSpec, ...]


def read_pool(path: Path = PREFECT_YAML, *, name: str | None = None) -> PoolSpec:
    """``definitions.customs_work_pool`` of prefect.yaml, checked (``name`` overrides the pool's name)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the work pool: {exc}") from None
    where = f"{path}: definitions.customs_work_pool"
    pool: Any = (data.get("definitions") or {}).get("customs_work_pool")
    if not isinstance(pool, dict) or not pool.get("name"):
        raise ValueError(f"{where}: missing, or without a name")
    queues = []
    for index, queue in enumerate(pool.get("queues") or []):
        if not isinstance(queue, dict) or not queue.get("name") or not isinstance(queue.get("priority"), int):
            raise ValueError(f"{where}.queues[{index}]: each queue needs a name and an integer priority")
        limit = queue.get("concurrency_limit")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"{where}.queues[{index}].concurrency_limit: a whole number of runs, or null for none")
        queues.append(QueueSpec(queue["name"], queue["priority"], limit, " ".join(str(queue.get("description", "")).split())))
    if not queues:
        raise ValueError(f"{where}: no queues")
    return PoolSpec(
        name=name or pool["name"],
        description=" ".join(str(pool.get("description", "")).split()),
        concurrency_limit=pool.get("concurrency_limit"),
        queues=tuple(queues),
    )


def ensure_pool(client: SyncPrefectClient, spec: PoolSpec) -> tuple[WorkPool, list[str]]:
    """Create the pool and the queues that are missing; returns the pool and notes on what differs."""
    notes: list[str] = []
    try:
        pool = client.read_work_pool(spec.name)
    except ObjectNotFound:
        try:
            pool = client.create_work_pool(
                WorkPoolCreate(
                    name=spec.name,
                    type=WORKER_TYPE,
                    description=spec.description or None,
                    concurrency_limit=spec.concurrency_limit,
                    base_job_template=ClearanceWorker.get_default_base_job_template(),
                )
            )
            notes.append(f"work pool {spec.name} created (type {WORKER_TYPE})")
        except ObjectAlreadyExists:  # another host created it at the same moment (both rebuilding: upkeep.py)
            pool = client.read_work_pool(spec.name)
    template = ClearanceWorker.get_default_base_job_template()
    if pool.type == WORKER_TYPE and pool.base_job_template != template:  # made by an earlier version: nothing to keep
        client.update_work_pool(spec.name, WorkPoolUpdate(base_job_template=template))
        notes.append(f"work pool {spec.name}: base job template updated (runs execute in the worker's process)")
    if pool.type != WORKER_TYPE:
        notes.append(
            f"work pool {spec.name} is of type {pool.type!r}, not {WORKER_TYPE!r}: the clearance worker serves it all the same "
            f"(recreate it to change the type shown in the UI: prefect work-pool delete {spec.name})"
        )
    for queue in spec.queues:
        try:
            existing = client.read_work_queue_by_name(queue.name, work_pool_name=spec.name)
        except ObjectNotFound:
            try:
                client.create_work_queue(
                    name=queue.name,
                    work_pool_name=spec.name,
                    priority=queue.priority,
                    concurrency_limit=queue.concurrency_limit,
                    description=queue.description or None,
                )
            except ObjectAlreadyExists:  # another host created it at the same moment
                continue
            notes.append(
                f"work queue {spec.name}/{queue.name} created (priority {queue.priority}, limit {queue.concurrency_limit})"
            )
            continue
        if (existing.priority, existing.concurrency_limit) != (queue.priority, queue.concurrency_limit):
            notes.append(
                f"work queue {spec.name}/{queue.name} keeps priority {existing.priority} and limit {existing.concurrency_limit} "
                f"(prefect.yaml says {queue.priority} and {queue.concurrency_limit})"
            )
    return pool, notes
