"""The command line, as an official or an operator uses it (in-process with Typer's runner)."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from customs.cli import app
from customs.cli.root import ExitCode
from customs.services.clients import authenticate
from customs.services.queries import declaration_status
from flows.clearance import clearance
from tests.helpers import (
    DECLARANT_BIN,
    DECLARANT_IIN,
    INSPECTOR,
    ROOT,
    SUPERVISOR,
    as_bytes,
    cleared,
    events,
    flow_runs_of,
    fresh_deployments,
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
    fresh_deployments()  # the clearance deployment on a pool of its own: the command runs the run with a worker of its own
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
    assert refused.exit_code == ExitCode.REFUSED == 3  # refused by the intake rules, not a usage error
    assert json.loads(refused.stdout)["error"]["code"] == "JSON_INVALID"


@pytest.mark.usefixtures("prefect_harness")
def test_a_company_signing_with_a_gost_key_is_cleared_end_to_end_through_the_cli(settings, pki, tmp_path):
    """Issue 16: `customs pki issue --alg gost2004` (a company head's GOST 34.310-2004 key, as NCA issues them),
    `customs sign`, `customs submit --wait`: released, the signer read from the GOST certificate."""
    fresh_deployments()
    runner = CliRunner()
    issued = runner.invoke(
        app,
        ["pki", "issue", str(pki.dir), "--name", "ТОО «Алатау Импорт»", "--bin", DECLARANT_BIN, "--iin", DECLARANT_IIN]
        + ["--alg", "gost2004"],
    )
    assert issued.exit_code == 0, issued.output
    paths = dict(line.split(":", 1) for line in issued.stdout.splitlines() if ":" in line)
    key, cert, chain = (paths[name].strip() for name in ("key", "certificate", "chain"))
    assert chain.endswith("issuing-ca-gost2004.pem")
    declaration = tmp_path / "declaration.json"
    declaration.write_bytes(as_bytes(unique(sample())))
    signed = runner.invoke(app, ["sign", str(declaration), "--key", key, "--cert", cert, "--chain", chain])
    assert signed.exit_code == 0, signed.output
    result = runner.invoke(app, ["submit", str(declaration), "--signature", str(declaration) + ".p7s", "--wait", "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "released" and outcome["reasons"] == []
    status = json.loads(runner.invoke(app, ["status", outcome["application_id"], "--json"]).stdout)
    signer = status["signers"][0]["signer"]
    assert signer["bin"] == DECLARANT_BIN and "GOST 2004" in signer["issuer"], status["signers"]
    wrong = runner.invoke(app, ["pki", "issue", str(pki.dir), "--name", "x", "--iin", DECLARANT_IIN, "--alg", "gost2015"])
    assert wrong.exit_code != 0 and "has no gost2015 CA" in wrong.output


@pytest.mark.usefixtures("prefect_harness")
def test_cli_rerun_after_a_failed_step_is_audited_and_never_registers_twice(settings, company_signer, officials, monkeypatch):
    import customs.services.steps as risk
    from models.outbox import NoticeKind

    def broken(*args, **kwargs):
        raise RuntimeError("risk profile service unavailable")

    fresh_deployments()
    application_id = submit(company_signer, unique(sample()))
    monkeypatch.setattr(risk, "assess_risk", broken)
    with pytest.raises(RuntimeError):
        clearance(application_id)
    monkeypatch.undo()
    number = declaration_status(application_id)["registration_number"]
    runner = CliRunner()
    unsigned = runner.invoke(app, ["rerun", application_id, "--from-step", "risk_assessment"])
    assert unsigned.exit_code == 2 and "--key and --cert" in unsigned.stderr  # an official's act is signed
    signing = officials.cli_options(SUPERVISOR)
    refused = runner.invoke(app, ["rerun", application_id, "--from-step", "registration", *signing])
    assert refused.exit_code == 3 and "would not register again" in refused.output and number in refused.output
    rerun = runner.invoke(app, ["rerun", number, "--from-step", "risk_assessment", *signing, "--json"])
    assert rerun.exit_code == 0, rerun.output
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert (result["status"], result["registration_number"]) == ("released", number)
    (audited,) = events(application_id, "clearance_rerun")
    assert audited.actor == SUPERVISOR and audited.details["from_step"] == "risk_assessment"
    assert audited.details["signed_act"]["id"] and audited.details["signed_act"]["cert_serial"]
    (refusal,) = events(application_id, "official_action_refused")
    assert (refusal.actor, refusal.reasons[0]["code"]) == (SUPERVISOR, "STEP_ALREADY_DONE")
    runs = flow_runs_of(application_id)
    assert len(runs) == 2  # a new flow run, linked by the application tag
    (rerun_run,) = [r for r in runs if r.parameters.get("rerun_act") == audited.details["signed_act"]["id"]]
    assert rerun_run.deployment_id is not None and rerun_run.work_pool_name  # a run of the deployment (issue 24)
    assert len(notices(application_id, NoticeKind.REGISTRATION)) == 1 and len(notices(application_id, NoticeKind.RELEASE)) == 1
    nothing = runner.invoke(app, ["rerun", application_id, *signing])
    assert nothing.exit_code == 3 and "NOTHING_TO_RERUN" in nothing.output
    # Issue 17, item 11: a named step of a released declaration is the more specific STEP_ALREADY_DONE
    done = runner.invoke(app, ["rerun", application_id, "--from-step", "registration", *signing, "--json"])
    assert done.exit_code == 3
    assert json.loads(done.stdout)["error"] == {
        "code": "STEP_ALREADY_DONE",
        "path": "from_step",
        "message": f"registration is done (number {number}); re-running it would not register again; "
        "the declaration is released: its clearance is finished",
    }


def test_cli_print_request_queue_copy_printed_and_sla(settings, company_signer, officials, tmp_path):
    declaration = cleared(company_signer)
    runner = CliRunner()
    created = runner.invoke(app, ["print-request", declaration.registration_number, "--requested-by", DECLARANT_BIN, "--json"])
    assert created.exit_code == 0, created.output
    answer = json.loads(created.stdout.strip().splitlines()[-1])
    request_id = answer["request_id"]
    assert answer["copy"].startswith("rendered in ")  # no `customs serve` here: the command renders the copy itself
    queue = runner.invoke(app, ["print-queue", "--office", "50101"])
    assert request_id in queue.output and "min left" in queue.output
    assert queue.stdout.splitlines()[0].split() == ["request", "registration", "number", "office", "due", "at", "time", "left"]
    copy = runner.invoke(app, ["print-copy", request_id, "-o", str(tmp_path / "copy.pdf")])
    assert copy.exit_code == 0 and declaration.registration_number in pdf_text((tmp_path / "copy.pdf").read_bytes())
    wrong = runner.invoke(app, ["printed", request_id, *officials.cli_options("KZ-OF-0005")])
    assert wrong.exit_code == 3 and "OFFICE_MISMATCH" in wrong.output
    done = runner.invoke(app, ["printed", request_id, *officials.cli_options(INSPECTOR, "gost2004")])
    assert done.exit_code == 0 and "(in time)" in done.output and "signed act" in done.output
    (printed,) = events(declaration.application_id, "copy_printed")
    assert printed.actor == INSPECTOR and printed.details["signed_act"]["algorithm"].startswith("GOST")
    report = runner.invoke(app, ["sla", "--json"])
    assert json.loads(report.stdout)["total"]["printed_in_time"] == 1
    bad = runner.invoke(app, ["sla", "--from", "26.11.2026"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
    missing = runner.invoke(app, ["print-request", "A000000-NOTHING", "--json"])
    assert missing.exit_code == 4
    assert json.loads(missing.stdout)["error"] == {
        "code": "DECLARATION_NOT_FOUND",
        "path": "key",
        "message": "no declaration with application id or registration number 'A000000-NOTHING'",
    }
    unknown = runner.invoke(app, ["print-copy", "P-NOTHING", "-o", str(tmp_path / "none.pdf")])
    assert unknown.exit_code == 4 and "REQUEST_UNKNOWN" in unknown.output


def test_clients_cli(settings):
    runner = CliRunner()
    added = runner.invoke(app, ["clients", "add", "alatau", "--kind", "declarant", "--id", DECLARANT_BIN, "--json"])
    assert added.exit_code == 0, added.output
    token = json.loads(added.stdout.splitlines()[0])["token"]
    assert "not stored" in added.stderr and authenticate(token) is not None
    assert runner.invoke(app, ["clients", "add", "kgd", "--kind", "official", "--official", INSPECTOR]).exit_code == 0
    refused = runner.invoke(app, ["clients", "add", "bad", "--kind", "official"])
    assert refused.exit_code == 3 and "--official" in refused.stderr
    assert runner.invoke(app, ["clients", "add", "bad", "--kind", "auditor"]).exit_code == 2  # not a kind: usage
    listed = runner.invoke(app, ["clients", "list"])
    assert listed.stdout.splitlines()[0].split() == ["name", "kind", "acts", "for", "created", "state"]
    assert "alatau" in listed.stdout and INSPECTOR in listed.stdout and token not in listed.stdout
    assert runner.invoke(app, ["clients", "revoke", "alatau"]).exit_code == 0
    assert authenticate(token) is None
    assert "already revoked" in runner.invoke(app, ["clients", "revoke", "alatau"]).stdout
    assert runner.invoke(app, ["clients", "revoke", "nobody"]).exit_code == 4


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


# --- Issue 17, item 9: exit codes, JSON errors, choices, one name per role, status, tables, panels -----------


def test_exit_codes_tell_usage_refusal_not_found_apart(settings, company_signer, officials):
    runner = CliRunner()
    unknown = runner.invoke(app, ["status", "A000000-NOTHING", "--json"])
    assert unknown.exit_code == ExitCode.NOT_FOUND == 4
    assert json.loads(unknown.stdout) == {
        "error": {
            "code": "DECLARATION_NOT_FOUND",
            "path": "key",
            "message": "no declaration with application id or registration number 'A000000-NOTHING'",
        }
    }
    as_text = runner.invoke(app, ["status", "A000000-NOTHING"])
    assert as_text.exit_code == 4 and as_text.stdout == "" and "error: no declaration" in as_text.stderr
    for args in (
        ["decide", "A000000-NOTHING", "maybe", "--official", INSPECTOR],  # not a decision
        ["decide", "A000000-NOTHING", "release", "--official", INSPECTOR, "--code", "13"],
        ["rerun", "A000000-NOTHING", "--from-step", "inspection"],
        ["submit", "x.json", "--channel", "fax"],
        ["outbox", "list", "--status", "lost"],
        ["status"],  # the key is missing
    ):
        usage = runner.invoke(app, args)
        assert usage.exit_code == ExitCode.USAGE == 2, (args, usage.output)
    unsigned = runner.invoke(app, ["decide", "A000000-NOTHING", "release", "--official", INSPECTOR])
    assert unsigned.exit_code == 2 and "--key" in unsigned.stderr  # an official's act is signed
    signing = officials.cli_options(INSPECTOR)
    application_id = submit(company_signer, unique(sample()))
    refused = runner.invoke(app, ["decide", application_id, "release", *signing, "--json"])
    assert refused.exit_code == ExitCode.REFUSED == 3  # not awaiting an official: the rules refuse it
    assert set(json.loads(refused.stdout)["error"]) == {"code", "path", "message"}
    assert runner.invoke(app, ["decide", "A000000-NOTHING", "release", *signing]).exit_code == 4


def test_decide_says_what_became_of_the_waiting_run(settings, company_signer, officials):
    """Issue 17: `customs decide` answered `flow_runs_resumed: []` without a word when no run was resumed. It says
    so, and what will happen: here no Prefect server answers (the configured one is down)."""
    from customs.core.settings import configure
    from tests.helpers import free_port, run_steps, submit_signed

    configure(settings.model_copy(update={"prefect_api_url": f"http://127.0.0.1:{free_port()}/api"}))
    waiting = submit_signed(company_signer, unique(sample("03-unpaid-vat.json"))).application_id
    assert run_steps(waiting).status == "awaiting_official"
    decided = CliRunner().invoke(app, ["decide", waiting, "release", *officials.cli_options(INSPECTOR), "--json"])
    assert decided.exit_code == 0, decided.output
    answer = json.loads(decided.stdout.strip().splitlines()[-1])
    assert answer["status"] == "released" and answer["flow_runs_resumed"] == []
    assert answer["flow_runs_note"].startswith("no Prefect server answered: the decision is recorded")


def test_an_unreachable_database_or_prefect_api_exits_5(settings):
    from customs.core.settings import configure
    from tests.helpers import free_port

    configure(settings.model_copy(update={"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/none"}))
    result = CliRunner().invoke(app, ["status", "A000000-NOTHING", "--json"])
    assert result.exit_code == ExitCode.UNAVAILABLE == 5, result.output
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE" and error["message"].startswith("the database does not answer: ")
    configure(settings.model_copy(update={"prefect_api_url": f"http://127.0.0.1:{free_port()}/api"}))
    deploy = CliRunner().invoke(app, ["deploy"])
    assert deploy.exit_code == 5 and "does not answer /health" in deploy.stderr


def test_an_unreachable_mail_server_makes_outbox_dispatch_exit_5(settings, company_signer):
    from customs.core.settings import configure
    from tests.helpers import free_port

    application_id = submit(company_signer, unique(sample()))
    configure(settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": free_port(), "smtp_timeout": 5}))
    runner = CliRunner()
    dispatched = runner.invoke(app, ["outbox", "dispatch"])
    assert dispatched.exit_code == ExitCode.UNAVAILABLE, dispatched.output
    assert "0 sent" in dispatched.stdout and "took nothing this pass: " in dispatched.stderr
    listed = runner.invoke(app, ["outbox", "list", "--application", application_id])
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["id", "status", "kind", "application", "recipient", "tries", "last", "error"]
    assert rows and all("pending" in row and application_id in row for row in rows)  # they wait for the next pass


def test_status_shows_the_sha256_and_the_signers(settings, company_signer):
    declaration = cleared(company_signer)
    shown = CliRunner().invoke(app, ["status", declaration.registration_number])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert f"SHA-256:              {declaration.content_sha256}  (of the declaration's bytes as received and stored)" in lines
    header = lines.index("signers:") + 1
    assert lines[header].split() == ["document", "signer", "IIN", "BIN", "role", "serial", "signature"]
    signer = lines[header + 1]
    assert "ТОО «Алатау Импорт»" in signer and DECLARANT_BIN in signer and "first head" in signer and "valid" in signer
    history = lines.index("history:") + 1
    assert lines[history].split()[:4] == ["at", "(Kazakhstan", "time)", "event"]
    assert any("transition" in line and "released" in line for line in lines[history + 1 :])


def test_help_groups_the_commands_and_shows_every_choice(settings):
    import click
    from typer.main import get_command

    runner = CliRunner()
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "150"}).stdout
    panels = ["Declarations", "Officials", "Paper copies", "Outbox", "Operations", "Test PKI and demo"]
    assert [top.index(f"─ {p} ") for p in panels] == sorted(top.index(f"─ {p} ") for p in panels)
    assert top.index("demo ") > top.index("─ Test PKI and demo ") > top.index("worker ")
    for args, choices in (
        (["submit", "--help"], "electronic|portal|paper"),
        (["decide", "--help"], "release|refuse"),
        (["decide", "--help"], "10|11|12"),
        (["rerun", "--help"], "signature_check|registration|risk_assessment|release"),
        (["outbox", "list", "--help"], "pending|sent|failed|undeliverable"),
        (["clients", "add", "--help"], "declarant|portal|official"),
        (["pki", "issue", "--help"], "head|signatory|financial|hr|employee|none"),
    ):
        assert choices in runner.invoke(app, args, env={"COLUMNS": "250"}).stdout, args

    def every_command(group: click.Group, ctx: click.Context):
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if hasattr(command, "list_commands"):  # a group (Typer's own group class is not click's here)
                yield from every_command(command, ctx)
            else:
                yield command

    root = get_command(app)
    commands = list(every_command(root, click.Context(root)))
    with_json = [c for c in commands if any("--json" in p.opts for p in c.params)]
    assert len(with_json) >= 15
    assert all(p.help for c in with_json for p in c.params if "--json" in p.opts)
    people = {o for c in commands for p in c.params for o in p.opts} & {"--by", "--actor", "--operator"}
    assert people == set()  # issue 23: who acts is the official whose key signs the act, never a name given
    acts = {
        c.name: {o for p in c.params for o in p.opts} for c in commands if c.name in {"printed", "rerun", "requeue", "submit"}
    }
    assert len(acts) == 4 and all({"--official", "--key", "--cert", "--chain", "--act"} <= opts for opts in acts.values())


def test_an_officials_act_is_signed_here_or_drafted_and_signed_elsewhere(settings, company_signer, officials, tmp_path):
    """Issue 23: the options of an official's act on the command line (customs.cli.signing): --key/--cert sign here;
    `customs act draft` writes the document that NCALayer (here `customs sign`) signs elsewhere, given with --act and
    --signature; missing or conflicting options are usage errors, before anything is done."""
    from sqlmodel import select

    from customs.core.db import transaction
    from models.outbox import Notice, NoticeStatus

    application_id = submit(company_signer, unique(sample()))
    with transaction() as session:
        notice = session.exec(select(Notice).where(Notice.application_id == application_id)).first()
        notice.status = NoticeStatus.FAILED
        session.add(notice)
        notice_id = notice.id
    runner = CliRunner()
    key, cert = officials.cli_options(INSPECTOR)[3], officials.cli_options(INSPECTOR)[5]
    act, signature = tmp_path / "act.json", tmp_path / "act.json.p7s"
    for args, says in (
        ([], "an official's act is signed"),
        (["--official", INSPECTOR, "--key", key], "--key and --cert go together"),
        (["--key", key, "--cert", cert], "give --official"),
        (["--act", str(act)], "--act and --signature go together"),
        (["--official", INSPECTOR, "--key", key, "--cert", cert, "--act", str(act), "--signature", str(signature)], "not both"),
    ):
        usage = runner.invoke(app, ["outbox", "requeue", str(notice_id), *args])
        assert usage.exit_code == ExitCode.USAGE and says in usage.stderr, (args, usage.output)
    assert notices(application_id)[0].status == "failed" and events(application_id, "official_action_refused") == []

    drafted = runner.invoke(app, ["act", "draft", "requeue_notice", str(notice_id), "--official", INSPECTOR, "-o", str(act)])
    assert drafted.exit_code == 0 and "SHA-256" in drafted.output, drafted.output
    document = json.loads(act.read_bytes())
    assert (document["act"], document["official_id"], document["subject"]) == (
        "requeue_notice",
        INSPECTOR,
        {"notice_id": str(notice_id)},
    )
    signed = runner.invoke(app, ["sign", str(act), "--key", key, "--cert", cert])
    assert signed.exit_code == 0 and signature.exists(), signed.output
    requeued = runner.invoke(app, ["outbox", "requeue", str(notice_id), "--act", str(act), "--signature", str(signature)])
    assert requeued.exit_code == 0 and "signed act" in requeued.output, requeued.output
    (event,) = events(application_id, "notice_requeued")
    assert event.actor == INSPECTOR and event.details["signed_act"]["sha256"] == hashlib.sha256(act.read_bytes()).hexdigest()
    replayed = runner.invoke(
        app, ["outbox", "requeue", str(notice_id), "--act", str(act), "--signature", str(signature), "--json"]
    )
    assert replayed.exit_code == 3 and json.loads(replayed.stdout)["error"]["code"] == "ACT_REPLAYED"
    # the document of a declaration's act names it by number and SHA-256, to stdout as the exact bytes to sign
    rerun = runner.invoke(
        app, ["act", "draft", "rerun", application_id, "--official", INSPECTOR, "--choice", "from_step=registration"]
    )
    assert rerun.exit_code == 0 and not rerun.stdout.endswith("\n")
    assert json.loads(rerun.stdout)["subject"]["declaration_sha256"] == declaration_status(application_id)["sha256"]
    assert runner.invoke(app, ["act", "draft", "delete", application_id, "--official", INSPECTOR]).exit_code == 2
    assert runner.invoke(app, ["act", "draft", "rerun", "A000000-NOTHING", "--official", INSPECTOR]).exit_code == 4


def test_cli_paper_entry_is_the_officials_signed_act(settings, company_signer, officials, tmp_path, monkeypatch):
    import customs.cli.declarations as declarations

    started: list[str] = []
    monkeypatch.setattr(declarations, "launch_clearance", lambda application_id, wait, **_: started.append(application_id))
    paper = tmp_path / "paper.json"
    paper.write_bytes(as_bytes(unique(sample())))
    runner = CliRunner()
    unsigned = runner.invoke(app, ["submit", str(paper), "--channel", "paper", "--official", INSPECTOR])
    assert unsigned.exit_code == 2 and "--act-signature" in unsigned.stderr
    wrong = runner.invoke(app, ["submit", str(paper), "--channel", "paper", *officials.cli_options("KZ-OF-0005"), "--json"])
    assert wrong.exit_code == 3 and json.loads(wrong.stdout)["error"]["code"] == "OFFICE_MISMATCH"
    entered = runner.invoke(app, ["submit", str(paper), "--channel", "paper", *officials.cli_options(INSPECTOR), "--json"])
    assert entered.exit_code == 0, entered.output
    application_id = json.loads(entered.stdout)["application_id"]
    assert started == [application_id]
    (submitted,) = [e for e in events(application_id) if e.to_status == "submitted"]
    assert submitted.actor == INSPECTOR and submitted.details["signed_act"]["cert_serial"] == format(
        officials.issued(INSPECTOR).serial, "x"
    )
    electronic = runner.invoke(app, ["submit", str(paper), *officials.cli_options(INSPECTOR)])
    assert electronic.exit_code == 2 and "--channel paper" in electronic.stderr
    # drafted here, signed elsewhere (GOST), given with --act and --act-signature
    second, act = tmp_path / "second.json", tmp_path / "act.json"
    second.write_bytes(as_bytes(unique(sample())))
    drafted = runner.invoke(
        app, ["act", "draft", "enter_paper_declaration", str(second), "--official", INSPECTOR, "-o", str(act)]
    )
    assert drafted.exit_code == 0, drafted.output
    assert json.loads(act.read_bytes())["subject"]["declaration_sha256"] == hashlib.sha256(second.read_bytes()).hexdigest()
    (tmp_path / "act.json.p7s").write_bytes(officials.signer(INSPECTOR, "gost2004").sign(act.read_bytes()))
    given = ["--act", str(act), "--act-signature", str(tmp_path / "act.json.p7s")]
    entered = runner.invoke(app, ["submit", str(second), "--channel", "paper", *given, "--json"])
    assert entered.exit_code == 0, entered.output
    (submitted,) = [e for e in events(json.loads(entered.stdout)["application_id"]) if e.to_status == "submitted"]
    assert submitted.actor == INSPECTOR and submitted.details["signed_act"]["algorithm"].startswith("GOST")
    again = runner.invoke(app, ["submit", str(second), "--channel", "paper", *given, "--json"])  # a retry: the same
    assert again.exit_code == 0 and json.loads(again.stdout)["created"] is False
    other = runner.invoke(app, ["submit", str(paper), "--channel", "paper", *given, "--json"])  # an act of other bytes
    assert other.exit_code == 3 and json.loads(other.stdout)["error"]["code"] == "ACT_MISMATCH"  # entered before or not


def test_the_docs_document_every_exit_code():
    page = (ROOT / "docs" / "reference" / "cli-conventions.md").read_text(encoding="utf-8")
    section = page[page.index("## Exit codes") : page.index("## Errors as JSON")]
    for code in ExitCode:
        assert f"| {code.value} |" in section, code
