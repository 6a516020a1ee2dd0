"""customs/orchestration/prefect_adapter.py: the one place that touches Prefect's internals. One test per assumption
it makes of the flow engine (its module docstring numbers them), each failing when a Prefect release changes it,
and one that nothing else in the project imports a private Prefect module."""

from __future__ import annotations

import ast
import contextlib
import inspect
from pathlib import Path

import pytest

from customs.orchestration import prefect_adapter
from tests.helpers import ROOT


def test_assumption_1_the_engine_names_its_suspension_observer_with_the_parameters_the_adapter_takes():
    import prefect.flow_engine as engine

    observe = prefect_adapter.prefect_observer()
    assert observe is not None and observe is getattr(engine, prefect_adapter.HOOK_NAME)
    assert tuple(inspect.signature(observe).parameters) == prefect_adapter.HOOK_PARAMETERS
    assert prefect_adapter.check_engine() == []


def test_assumption_2_a_deployment_run_calls_the_replaced_observer_with_its_id_and_request(monkeypatch):
    """The engine looks the name up when a run of a deployment starts (BaseFlowRunEngine.
    setup_flow_run_suspension_request): driven here with a run object that names a deployment, the installed
    route is asked once, with the run's id and a request that has mark_requested."""
    from uuid import uuid4

    import prefect.flow_engine as engine

    base = engine.BaseFlowRunEngine
    code = base.setup_flow_run_suspension_request.__wrapped__.__code__
    assert prefect_adapter.HOOK_NAME in code.co_names

    calls = []

    def route(flow_run_id, request):
        calls.append((flow_run_id, request))
        return contextlib.nullcontext()

    class Run:  # what setup_flow_run_suspension_request reads of its flow run
        id = uuid4()
        deployment_id = uuid4()

    class Engine:
        flow_run = Run()
        _flow_run_suspension_request = None

        def _get_flow_run_suspension_request(self):
            return self._flow_run_suspension_request

    from prefect.context import FlowRunContext

    request_type = FlowRunContext.model_fields["flow_run_suspension_request"].annotation
    fake = Engine()
    fake._flow_run_suspension_request = request_type()
    assert prefect_adapter.install(route)
    try:
        with base.setup_flow_run_suspension_request(fake) as request:
            assert request is fake._flow_run_suspension_request
    finally:
        prefect_adapter.uninstall(route)
    assert [(run_id, request) for run_id, request in calls] == [(Run.id, fake._flow_run_suspension_request)]
    assert callable(calls[0][1].mark_requested)
    assert not prefect_adapter.installed()


def test_a_run_the_route_does_not_take_gets_prefects_own_observer(monkeypatch):
    from uuid import uuid4

    seen = []

    @contextlib.contextmanager
    def prefects(flow_run_id, suspension_request, polling_interval=10):
        seen.append(flow_run_id)
        yield

    monkeypatch.setattr(prefect_adapter, "_prefect_observe", prefects)

    def route(flow_run_id, request):
        return None

    assert prefect_adapter.install(route)
    try:
        run_id = uuid4()
        with prefect_adapter._observe(run_id, object()):
            pass
    finally:
        prefect_adapter.uninstall(route)
    assert seen == [run_id]


def test_assumption_3_a_marked_request_stops_the_run_at_its_next_task_with_pause():
    """What the worker does when it hears a suspension: mark the engine's request. The engine must then raise
    Pause (with that state) at the next task boundary, never running the next task."""
    from prefect.client.schemas.objects import State, StateType
    from prefect.context import FlowRunContext
    from prefect.exceptions import Pause

    request_type = FlowRunContext.model_fields["flow_run_suspension_request"].annotation
    request = request_type()
    assert not request.is_requested()
    state = State(type=StateType.PAUSED, name="Suspended")
    request.mark_requested(state)
    with pytest.raises(Pause) as paused:
        request.raise_if_requested()
    assert paused.value.state is state


@pytest.mark.usefixtures("prefect_harness")
def test_assumption_3_under_the_engine_a_flow_whose_request_is_marked_runs_no_further_task():
    from prefect import flow, task
    from prefect.client.schemas.objects import State, StateType
    from prefect.context import FlowRunContext
    from prefect.exceptions import Pause

    ran = []

    @task
    def step(i: int) -> int:
        ran.append(i)
        if i == 1:
            FlowRunContext.get().flow_run_suspension_request.mark_requested(State(type=StateType.PAUSED, name="Suspended"))
        return i

    @flow(persist_result=False)
    def three_steps() -> None:
        for i in range(1, 4):
            step(i)

    with pytest.raises(Pause):
        three_steps()
    assert ran == [1]


def test_install_refuses_when_the_engine_changed(monkeypatch):
    """Prefect changed (simulated): install logs why and refuses, so the runs keep Prefect's own observer."""

    def other(flow_run_id, request):  # a different signature
        yield

    monkeypatch.setattr(prefect_adapter, "_prefect_observe", other)
    assert prefect_adapter.check_engine()
    assert prefect_adapter.install(lambda flow_run_id, request: None) is False
    assert not prefect_adapter.installed()


def test_no_other_module_imports_a_private_prefect_module():
    offenders = []
    for path in [*ROOT.glob("customs/**/*.py"), *ROOT.glob("flows/**/*.py"), *ROOT.glob("tasks/**/*.py")]:
        if path == ROOT / "customs/orchestration/prefect_adapter.py":
            continue
        tree = ast.parse(Path(path).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "prefect" and any(part.startswith("_") for part in parts[1:]):
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []
