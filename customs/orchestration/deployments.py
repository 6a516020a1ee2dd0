"""The deployments of prefect.yaml: read and checked, and registered with the Prefect server."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.flows import load_flow_from_entrypoint
from prefect.schedules import Cron
from pydantic.fields import FieldInfo

from customs.core.paths import PREFECT_YAML, PROJECT_ROOT
from customs.core.settings import Settings, get_settings
from customs.orchestration.automations import apply_automations
from customs.orchestration.pool import ensure_pool, read_pool
from customs.rules.outcomes import NOT_STARTED, OUTCOMES


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


def parameter_schema(flow: Any) -> dict[str, Any]:
    """The flow's parameter schema as the deployment's run form shows it (issue 24, part 2).

    Prefect's own schema titles each parameter with its Python name and drops the title and description of a
    pydantic ``Field`` in ``Annotated``; here they are put back (a parameter with none gets its name in words, and
    its description from the docstring as Prefect reads it). An optional parameter (``int | None = None``) is shown
    as its type alone, left empty when not given: the form then has a plain field, not a type toggle. And
    ``additionalProperties: false``: Prefect refuses a run created with a parameter its flow does not take (e.g. a
    clock, ``now``, issue 23) instead of creating one that fails."""
    schema = flow.parameters.model_dump_for_openapi()
    try:
        hints = typing.get_type_hints(flow.fn, include_extras=True)
    except Exception:  # a flow whose annotations do not resolve keeps Prefect's titles
        hints = {}
    for name, prop in (schema.get("properties") or {}).items():
        field = next((m for m in getattr(hints.get(name), "__metadata__", ()) if isinstance(m, FieldInfo)), None)
        prop["title"] = field.title if field is not None and field.title else name.replace("_", " ").capitalize()
        if field is not None and field.description:
            prop["description"] = field.description
        options = prop.get("anyOf")
        if options and prop.get("default", ...) is None and name not in schema.get("required", ()):
            others = [o for o in options if o != {"type": "null"}]
            if len(others) == 1 and len(others) < len(options):
                del prop["anyOf"], prop["default"]
                prop.update(others[0])
    return {**schema, "additionalProperties": False}


def close_parameters(deployment_id: UUID, flow: Any) -> None:
    """The deployment's parameter schema (``parameter_schema``: titled, described, closed)."""
    schema = parameter_schema(flow)
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
    # One per outcome, by the run's outcome:<status> tag (customs.rules.outcomes)
    **{o.search: [_run_filter("tag", [o.tag])] for o in (*OUTCOMES.values(), NOT_STARTED)},
}


def ensure_saved_searches(client) -> list[str]:
    existing = {s["name"] for s in client.request("POST", "/saved_searches/filter", json={}).json()}
    made = []
    for name, filters in SAVED_SEARCHES.items():
        if name not in existing:
            client.request("PUT", "/saved_searches/", json={"name": name, "filters": filters})
            made.append(f"saved filter of the runs page created: {name}")
    return made
