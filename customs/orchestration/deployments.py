"""The deployments of prefect.yaml: read and checked, and registered with the Prefect server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.flows import load_flow_from_entrypoint
from prefect.schedules import Cron

from customs.core.paths import PREFECT_YAML, PROJECT_ROOT
from customs.core.settings import Settings, get_settings
from customs.orchestration.automations import apply_automations
from customs.orchestration.pool import ensure_pool, read_pool


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str
    description: str
    tags: tuple[str, ...]
    parameters: dict[str, Any]
    schedules: tuple[dict[str, Any], ...]
    work_queue: str | None = None  # the queue of the work pool its runs go to (prefect.yaml work_pool.work_queue_name)


def read_deployments(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    """The deployments of prefect.yaml, checked for what `customs serve` needs."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the deployments: {exc}") from None
    specs = []
    for index, item in enumerate(data.get("deployments") or []):
        where = f"{path}: deployments[{index}]"
        if not isinstance(item, dict) or not item.get("name") or not item.get("entrypoint"):
            raise ValueError(f"{where}: each deployment needs a name and an entrypoint")
        specs.append(
            DeploymentSpec(
                name=item["name"],
                entrypoint=item["entrypoint"],
                description=" ".join(str(item.get("description", "")).split()),
                tags=tuple(item.get("tags") or ()),
                parameters=dict(item.get("parameters") or {}),
                schedules=tuple(item.get("schedules") or ()),
                work_queue=(item.get("work_pool") or {}).get("work_queue_name"),
            )
        )
    if not specs:
        raise ValueError(f"{path}: no deployments")
    return specs


def register_deployments(specs: list[DeploymentSpec], work_pool: str | None = None) -> dict[str, tuple[UUID, Any]]:
    """Create or update each deployment on the Prefect server, attached to ``work_pool`` (its runs go to the
    spec's queue) when one is given; returns name -> (deployment id, flow)."""
    registered = {}
    for spec in specs:
        flow = load_flow_from_entrypoint(str(PROJECT_ROOT / spec.entrypoint))
        schedules = [Cron(s["cron"], timezone=s.get("timezone")) for s in spec.schedules if "cron" in s]
        deployment = flow.to_deployment(
            name=spec.name,
            description=spec.description,
            tags=list(spec.tags),
            parameters=spec.parameters,
            schedules=schedules,  # an empty list clears schedules a previous release had (the minute jobs: see gate.py)
            work_pool_name=work_pool,
            work_queue_name=spec.work_queue if work_pool else None,
        )
        deployment_id = deployment.apply(work_pool_name=work_pool)
        close_parameters(deployment_id, flow)
        registered[spec.name] = (deployment_id, flow)
    return registered


def close_parameters(deployment_id: UUID, flow: Any) -> None:
    """The deployment's parameter schema with ``additionalProperties: false``: Prefect then refuses a run created
    with a parameter its flow does not take (e.g. a clock, ``now``, issue 23) instead of creating one that fails."""
    schema = {**flow.parameters.model_dump_for_openapi(), "additionalProperties": False}
    with get_client(sync_client=True) as client:
        client.request("PATCH", "/deployments/{id}", path_params={"id": deployment_id}, json={"parameter_openapi_schema": schema})


@dataclass
class Project:
    """What `customs serve` and `customs deploy` put on the Prefect server."""

    pool: Any
    deployments: dict[str, tuple[UUID, Any]]
    notes: list[str]


def apply_project(settings: Settings | None = None) -> Project:
    """The work pool and its queues (created when missing), the deployments attached to it, the automations."""
    settings = settings or get_settings()
    with get_client(sync_client=True) as client:
        pool, notes = ensure_pool(client, read_pool(name=settings.worker_pool))
    deployments = register_deployments(read_deployments(), work_pool=pool.name)
    notes += apply_automations(pool, settings)
    with get_client(sync_client=True) as client:
        notes += ensure_saved_searches(client)
    return Project(pool, deployments, notes)


def _run_filter(property_: str, value: list[str]) -> dict:
    """One filter of a saved search, as the Prefect UI writes it (its runs page reads these back)."""
    return {"object": "flowRun", "property": property_, "type": "", "operation": "", "value": value}


# The runs page's saved filters operations staff start from (created when missing; kept when edited in the UI).
SAVED_SEARCHES = {
    "Clearance": [_run_filter("tag", ["clearance"])],
    "Waiting for an official": [_run_filter("tag", ["clearance"]), _run_filter("state", ["Paused", "Suspended"])],
    "Failed clearance": [_run_filter("tag", ["clearance"]), _run_filter("state", ["Failed", "Crashed"])],
}


def ensure_saved_searches(client) -> list[str]:
    existing = {s["name"] for s in client.request("POST", "/saved_searches/filter", json={}).json()}
    made = []
    for name, filters in SAVED_SEARCHES.items():
        if name not in existing:
            client.request("PUT", "/saved_searches/", json={"name": name, "filters": filters})
            made.append(f"saved filter of the runs page created: {name}")
    return made
