"""Issue 23, part 4: a private person's IIN, certificate name and name appear in none of what Prefect shows of the
clearance of their declaration: the run's name, tags, parameters, logs (also of a step that failed with them in its
error) and artifacts, read back through the Prefect client."""

from __future__ import annotations

import json
import logging

import pytest

from customs.pki.testing import CmsSigner
from flows.clearance import clearance
from tests.helpers import DECLARANT_IIN, as_bytes, flow_runs_of, sample, unique, wait_until

pytestmark = pytest.mark.usefixtures("prefect_harness")

STRANGER_IIN = "910312300452"
STRANGER_CN = "ПОСТОРОННИЙ ПОДПИСАНТ"
PERSON_CN = "ТЕСТОВ ТЕСТ"  # the person_signer fixture's certificate
DECLARANT_NAME = "Тестов Тест Тестович"  # sample 02's declarant, a private person


def _submit(signer, document) -> str:
    from customs.services.intake import submit_declaration

    content = as_bytes(document)
    return submit_declaration(content, signer.sign(content)).application_id


def _shown_by_prefect(application_id: str, logged: str) -> str:
    """Everything Prefect holds about the declaration's runs as one text, once their logs say ``logged``."""

    def read():
        text, logs = _read(application_id)
        return text if logged in logs else None

    return wait_until(read, f"the run's log {logged!r} to reach Prefect", 30)


def _read(application_id: str) -> tuple[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    for name in ("prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, APILogHandler):
                handler.flush()
    runs = flow_runs_of(application_id)
    assert runs
    ids = [run.id for run in runs]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200)
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
        task_runs = [t for t in client.read_task_runs() if t.flow_run_id in ids]
        states = [s for run in runs for s in client.read_flow_run_states(run.id)]
    log_text = "\n".join(log.message for log in logs)
    shown = {
        "runs": [{"name": r.name, "tags": r.tags, "parameters": r.parameters, "state": r.state.message} for r in runs],
        "states": [s.message for s in states],
        "task_runs": [{"name": t.name, "tags": t.tags} for t in task_runs],
        "artifacts": [{"key": a.key, "description": a.description, "data": a.data} for a in artifacts],
        "logs": log_text,
    }
    return json.dumps(shown, ensure_ascii=False, default=str), log_text


def _assert_private(text: str) -> None:
    for private in (DECLARANT_IIN, STRANGER_IIN):
        assert private not in text, private
    for name in (STRANGER_CN, PERSON_CN, DECLARANT_NAME):
        assert name.lower() not in text.lower(), name


def test_a_private_persons_declaration_leaves_no_iin_or_name_in_prefect(settings, person_signer, pki, monkeypatch):
    # Cleared to its resting state: waits for an official (yellow lane); signed by the declarant herself.
    waiting = _submit(person_signer, unique(sample("02-yellow-laptops-from-cn.json")))
    assert clearance(waiting, wait_for_official=False)["status"] == "awaiting_official"
    shown = _shown_by_prefect(waiting, "notices: acceptance sent")
    _assert_private(shown)

    # Refused because another person signed: both IINs are in the reasons, which the run's artifact lists, masked.
    issued = pki.issue(name=STRANGER_CN, iin=STRANGER_IIN, label="stranger")
    stranger = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
    refused = _submit(stranger, unique(sample("02-yellow-laptops-from-cn.json")))
    result = clearance(refused)
    assert result["status"] == "registration_refused"
    message = next(r["message"] for r in result["reasons"] if r["code"] == "SIGNER_NOT_DECLARANT")
    assert STRANGER_IIN in message and DECLARANT_IIN in message  # the declarant reads them in full (the database)
    shown = _shown_by_prefect(refused, "registration refused: ")
    _assert_private(shown)
    assert "9103******52" in shown and "8805******24" in shown  # the artifact still says what was wrong

    # A step failing with them in its error: the run's log has the error, masked, and so does the engine's traceback.
    import customs.services.steps as steps

    def broken(*args, **kwargs):
        raise RuntimeError(f"certificate of CN={PERSON_CN},SERIALNUMBER=IIN{DECLARANT_IIN},C=KZ could not be read")

    monkeypatch.setattr(steps, "check_signatures", broken)
    failing = _submit(person_signer, unique(sample("02-yellow-laptops-from-cn.json")))
    with pytest.raises(RuntimeError):
        clearance(failing)

    shown = _shown_by_prefect(failing, "could not be read")
    _assert_private(shown)
    assert "CN=Т. Т.,SERIALNUMBER=IIN8805******24" in shown
