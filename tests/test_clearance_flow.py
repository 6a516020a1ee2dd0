"""The clearance flow under Prefect (one session-wide test harness): one flow run per declaration,
safe to re-run, retried on database errors only."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from conftest import as_bytes, sample, unique
from customs.services import declaration_status, submit_declaration
from flows.clearance import clearance

pytestmark = pytest.mark.usefixtures("prefect_harness")


def submit(signer, document):
    content = as_bytes(document)
    return submit_declaration(content, signer.sign(content)).application_id


def flow_run_of(application_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["clearance"])))
    return [r for r in runs if r.parameters.get("application_id") == application_id]


def test_green_declaration_end_to_end_is_one_named_and_tagged_flow_run(settings, company_signer):
    application_id = submit(company_signer, unique(sample()))
    result = clearance(application_id)
    assert (result["status"], result["lane"]) == ("released", "green")
    runs = flow_run_of(application_id)
    assert len(runs) == 1
    run = runs[0]
    assert run.name == result["registration_number"]
    assert {"office:50101", "document:goods-declaration", "lane:green"} <= set(run.tags)
    assert run.state.is_completed()


def test_refused_declaration_stops_after_registration(settings, company_signer):
    document = unique(sample())
    document["totals"]["items"] = 7
    result = clearance(submit(company_signer, document))
    assert result["status"] == "registration_refused"
    assert [r["code"] for r in result["reasons"]] == ["TOTALS_MISMATCH"]


def test_running_the_flow_twice_registers_and_releases_once(settings, company_signer):
    application_id = submit(company_signer, unique(sample()))
    first = clearance(application_id)
    events = len(declaration_status(application_id)["history"])
    second = clearance(application_id)
    assert second["registration_number"] == first["registration_number"]
    assert second["status"] == "released" and not second["acted"]
    assert len(declaration_status(application_id)["history"]) == events


def test_database_error_is_retried_and_registers_once(settings, company_signer, monkeypatch):
    import tasks.registration as registration

    real = registration.next_serial
    calls = {"n": 0}

    def flaky(session, office, day):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("UPDATE registration_counter", {}, Exception("database is locked"))
        return real(session, office, day)

    monkeypatch.setattr(registration, "next_serial", flaky)
    result = clearance(submit(company_signer, unique(sample())))
    assert calls["n"] == 2
    assert result["status"] == "released" and result["registration_number"].endswith("/0000001")


def test_failed_step_then_rerun_continues_where_the_declaration_stands(settings, company_signer, monkeypatch):
    import tasks.risk as risk

    def broken(*args, **kwargs):
        raise RuntimeError("risk profile service unavailable")

    application_id = submit(company_signer, unique(sample()))
    monkeypatch.setattr(risk, "assess_risk", broken)
    with pytest.raises(RuntimeError):
        clearance(application_id)
    assert declaration_status(application_id)["status"] == "registered"  # not retried: a retry cannot help
    number = declaration_status(application_id)["registration_number"]
    monkeypatch.undo()
    result = clearance(application_id)
    assert (result["status"], result["registration_number"]) == ("released", number)
    transitions = [e["to"] for e in declaration_status(application_id)["history"]]
    assert transitions.count("registered") == 1 and transitions.count("released") == 1


def test_cli_submit_wait_json(settings, company_signer, tmp_path):
    from customs.cli import app

    declaration = tmp_path / "declaration.json"
    declaration.write_bytes(as_bytes(unique(sample())))
    (tmp_path / "declaration.json.p7s").write_bytes(company_signer.sign(declaration.read_bytes()))
    invoice = tmp_path / "invoice.pdf"
    invoice.write_bytes(b"%PDF-1.4 invoice")
    (tmp_path / "invoice.pdf.p7s").write_bytes(company_signer.sign(invoice.read_bytes()))
    runner = CliRunner()
    result = runner.invoke(app, ["submit", str(declaration), "--signature", str(tmp_path / "declaration.json.p7s"),
                                 "--attach", str(invoice), "--attach-signature", str(tmp_path / "invoice.pdf.p7s"), "--wait", "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.output.strip().splitlines()[-1])
    assert outcome["status"] == "released" and outcome["lane"] == "green" and outcome["reasons"] == []
    assert set(outcome) >= {"application_id", "status", "submitted_at", "registration_number", "lane", "reasons"}
    status = runner.invoke(app, ["status", outcome["registration_number"], "--json"])
    assert json.loads(status.output)["application_id"] == outcome["application_id"]
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"{\"schema\": ")
    refused = runner.invoke(app, ["submit", str(bad), "--json"])
    assert refused.exit_code == 2
    assert json.loads(refused.output)["error"]["code"] == "JSON_INVALID"
