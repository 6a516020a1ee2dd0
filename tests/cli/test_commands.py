"""The command line, as an official or an operator uses it (in-process with Typer's runner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from customs.cli import app
from customs.services.clients import authenticate
from customs.services.queries import declaration_status
from flows.clearance import clearance
from tests.helpers import (
    DECLARANT_BIN,
    INSPECTOR,
    as_bytes,
    cleared,
    events,
    flow_runs_of,
    notices,
    pdf_text,
    rewrite_audit_event,
    sample,
    submit_signed,
    unique,
)


def submit(signer, document) -> str:
    return submit_signed(signer, document).application_id


@pytest.mark.usefixtures("prefect_harness")
def test_cli_submit_wait_json(settings, company_signer, tmp_path):
    declaration = tmp_path / "declaration.json"
    declaration.write_bytes(as_bytes(unique(sample())))
    (tmp_path / "declaration.json.p7s").write_bytes(company_signer.sign(declaration.read_bytes()))
    invoice = tmp_path / "invoice.pdf"
    invoice.write_bytes(b"%PDF-1.4 invoice")
    (tmp_path / "invoice.pdf.p7s").write_bytes(company_signer.sign(invoice.read_bytes()))
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "submit",
            str(declaration),
            "--signature",
            str(tmp_path / "declaration.json.p7s"),
            "--attach",
            str(invoice),
            "--attach-signature",
            str(tmp_path / "invoice.pdf.p7s"),
            "--wait",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "released" and outcome["lane"] == "green" and outcome["reasons"] == []
    assert set(outcome) >= {"application_id", "status", "submitted_at", "registration_number", "lane", "reasons"}
    status = runner.invoke(app, ["status", outcome["registration_number"], "--json"])
    assert json.loads(status.stdout)["application_id"] == outcome["application_id"]
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"schema": ')
    refused = runner.invoke(app, ["submit", str(bad), "--json"])
    assert refused.exit_code == 2
    assert json.loads(refused.stdout)["error"]["code"] == "JSON_INVALID"


@pytest.mark.usefixtures("prefect_harness")
def test_cli_rerun_after_a_failed_step_is_audited_and_never_registers_twice(settings, company_signer, monkeypatch):
    import customs.services.steps as risk
    from models.outbox import NoticeKind

    def broken(*args, **kwargs):
        raise RuntimeError("risk profile service unavailable")

    application_id = submit(company_signer, unique(sample()))
    monkeypatch.setattr(risk, "assess_risk", broken)
    with pytest.raises(RuntimeError):
        clearance(application_id)
    monkeypatch.undo()
    number = declaration_status(application_id)["registration_number"]
    runner = CliRunner()
    refused = runner.invoke(app, ["rerun", application_id, "--from-step", "registration"])
    assert refused.exit_code == 2 and "would not register again" in refused.output and number in refused.output
    rerun = runner.invoke(app, ["rerun", number, "--from-step", "risk_assessment", "--by", "KZ-OF-0002", "--json"])
    assert rerun.exit_code == 0, rerun.output
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert (result["status"], result["registration_number"]) == ("released", number)
    (audited,) = events(application_id, "clearance_rerun")
    assert audited.actor == "KZ-OF-0002" and audited.details["from_step"] == "risk_assessment"
    assert len(flow_runs_of(application_id)) == 2  # a new flow run, linked by the application tag
    assert len(notices(application_id, NoticeKind.REGISTRATION)) == 1 and len(notices(application_id, NoticeKind.RELEASE)) == 1
    nothing = runner.invoke(app, ["rerun", application_id])
    assert nothing.exit_code == 2 and "NOTHING_TO_RERUN" in nothing.output
    # Issue 17, item 11: a named step of a released declaration is the more specific STEP_ALREADY_DONE
    done = runner.invoke(app, ["rerun", application_id, "--from-step", "registration", "--json"])
    assert done.exit_code == 2
    assert json.loads(done.stdout)["error"] == {
        "code": "STEP_ALREADY_DONE",
        "path": "from_step",
        "message": f"registration is done (number {number}); re-running it would not register again; "
        "the declaration is released: its clearance is finished",
    }


def test_cli_print_request_queue_copy_printed_and_sla(settings, company_signer, tmp_path):
    declaration = cleared(company_signer)
    runner = CliRunner()
    created = runner.invoke(app, ["print-request", declaration.registration_number, "--requested-by", DECLARANT_BIN, "--json"])
    assert created.exit_code == 0, created.output
    answer = json.loads(created.stdout.strip().splitlines()[-1])
    request_id = answer["request_id"]
    assert answer["copy"].startswith("rendered in ")  # no `customs serve` here: the command renders the copy itself
    queue = runner.invoke(app, ["print-queue", "--office", "50101"])
    assert request_id in queue.output and "min left" in queue.output
    copy = runner.invoke(app, ["print-copy", request_id, "-o", str(tmp_path / "copy.pdf")])
    assert copy.exit_code == 0 and declaration.registration_number in pdf_text((tmp_path / "copy.pdf").read_bytes())
    wrong = runner.invoke(app, ["printed", request_id, "--official", "KZ-OF-0005"])
    assert wrong.exit_code == 2 and "OFFICE_MISMATCH" in wrong.output
    done = runner.invoke(app, ["printed", request_id, "--official", INSPECTOR])
    assert done.exit_code == 0 and "(in time)" in done.output
    report = runner.invoke(app, ["sla", "--json"])
    assert json.loads(report.stdout)["total"]["printed_in_time"] == 1
    bad = runner.invoke(app, ["sla", "--from", "26.11.2026"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
    missing = runner.invoke(app, ["print-request", "A000000-NOTHING", "--json"])
    assert missing.exit_code == 2 and json.loads(missing.stdout)["error"]["code"] == "DECLARATION_UNKNOWN"


def test_clients_cli(settings):
    runner = CliRunner()
    added = runner.invoke(app, ["clients", "add", "alatau", "--kind", "declarant", "--id", DECLARANT_BIN, "--json"])
    assert added.exit_code == 0, added.output
    token = json.loads(added.stdout.splitlines()[0])["token"]
    assert "not stored" in added.stderr and authenticate(token) is not None
    assert runner.invoke(app, ["clients", "add", "kgd", "--kind", "official", "--official", INSPECTOR]).exit_code == 0
    refused = runner.invoke(app, ["clients", "add", "bad", "--kind", "official"])
    assert refused.exit_code == 2 and "--official" in refused.stderr
    listed = runner.invoke(app, ["clients", "list"])
    assert "alatau" in listed.stdout and INSPECTOR in listed.stdout and token not in listed.stdout
    assert runner.invoke(app, ["clients", "revoke", "alatau"]).exit_code == 0
    assert authenticate(token) is None
    assert "already revoked" in runner.invoke(app, ["clients", "revoke", "alatau"]).stdout
    assert runner.invoke(app, ["clients", "revoke", "nobody"]).exit_code == 2


def test_cli_audit_verify_finds_a_rewrite_before_the_last_anchor(settings, company_signer):
    """Issue 15, finding 5: `customs audit anchor` signs the chain heads; an event rewritten afterwards, every later
    hash and the head recomputed (the chain alone verifies), makes `customs audit verify` exit 1 naming the
    chain, the anchor and what differs."""
    cleared(company_signer)
    runner = CliRunner()
    anchored = runner.invoke(app, ["audit", "anchor"])
    assert anchored.exit_code == 0, anchored.output
    assert "audit anchor 1 written to" in anchored.output and "office:50101" in anchored.output
    fine = runner.invoke(app, ["audit", "verify"])
    assert fine.exit_code == 0, fine.output
    assert "audit chains intact: 5 events in 1 chain; 1 anchor checked, the last at" in fine.output
    rewrite_audit_event("office:50101", 2, actor="KZ-OF-0002")
    broken = runner.invoke(app, ["audit", "verify"])
    assert broken.exit_code == 1
    assert "audit chain office:50101 was rewritten: event 5 has hash" in broken.output
    assert "anchor 1 of" in broken.output and "events 1..5 were changed" in broken.output
