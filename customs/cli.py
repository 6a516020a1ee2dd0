"""``customs``: the command line of the clearance back office."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from customs.settings import get_settings

app = typer.Typer(help="Customs clearance back office (Kazakhstan state revenue bodies).", no_args_is_help=True, add_completion=False)
pki_app = typer.Typer(help="A test PKI shaped like NCA RK's (for tests, the demo and integration testing).", no_args_is_help=True)
audit_app = typer.Typer(help="The append-only, hash-chained audit trail.", no_args_is_help=True)
server_app = typer.Typer(help="The local Prefect server that records flow runs.", no_args_is_help=True)
crl_app = typer.Typer(help="Certificate revocation lists of the trusted CAs.", no_args_is_help=True)
app.add_typer(crl_app, name="crl")


def _clients_app() -> typer.Typer:
    from customs.api_cli import clients_app

    return clients_app


app.add_typer(_clients_app(), name="clients")
app.add_typer(pki_app, name="pki")
app.add_typer(audit_app, name="audit")
outbox_app = typer.Typer(help="Notices to declarants and the support service (the e-mail outbox).", no_args_is_help=True)
app.add_typer(server_app, name="server")
app.add_typer(outbox_app, name="outbox")


def _fail(message: str, code: int = 2, *, as_json: bool = False, error: dict | None = None) -> None:
    if as_json:
        typer.echo(json.dumps({"error": error or {"message": message}}, ensure_ascii=False))
    else:
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {what} {path}: {exc.strerror}")


def _prepare_database() -> None:
    from customs.db import init_db

    init_db()


def run_clearance(application_id: str, *, requested_by: str | None = None, wait_for_official: bool = False) -> dict:
    """Run the clearance flow in this process, recorded in the Prefect server."""
    from customs.prefect_server import ensure_server, prefect_api
    from flows.clearance import clearance

    with prefect_api(ensure_server()):
        return clearance(application_id, requested_by=requested_by, wait_for_official=wait_for_official)


def resume_waiting_runs(application_id: str, run_input: dict, *, settle_seconds: float = 10.0) -> list[str]:
    """Give the decision to the flow runs of this declaration that wait for it, if a Prefect server is up.

    A run still on its way to the wait (running, not yet paused) is given a few seconds to get there.
    Nothing here can undo the decision, which is already committed: problems are reported, not raised."""
    import time

    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
        from prefect.client.schemas.objects import StateType
        from prefect.flow_runs import resume_flow_run

        from customs.prefect_server import is_healthy, prefect_api, running_api_url

        api_url = running_api_url(get_settings())
        if api_url is None or not is_healthy(api_url):
            return []
        resumed: list[str] = []
        deadline = time.monotonic() + settle_seconds
        with prefect_api(api_url), get_client(sync_client=True) as client:
            while True:
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=["clearance", f"application:{application_id}"]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED, StateType.RUNNING])),
                ))
                for run in runs:
                    if run.state.is_paused() and str(run.id) not in resumed:
                        try:
                            resume_flow_run(run.id, run_input=run_input)
                            resumed.append(str(run.id))
                        except Exception as exc:  # it finds the decision in the database when it next looks
                            typer.secho(f"note: flow run {run.id} could not be resumed ({exc})", err=True)
                if not any(r.state.is_running() for r in runs) or time.monotonic() > deadline:
                    return resumed
                time.sleep(0.5)
    except Exception as exc:
        typer.secho(f"note: the decision is recorded, but waiting flow runs could not be reached ({type(exc).__name__}: {exc})", err=True)
        return []


def _start_clearance_in_background(application_id: str) -> None:
    from customs.prefect_server import ensure_server

    settings = get_settings()
    env = dict(os.environ, PREFECT_API_URL=ensure_server())
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"clearance-{application_id}.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "flows.clearance", application_id], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    (log_dir / f"clearance-{application_id}.pid").write_text(str(process.pid))


def _stop_background_clearances() -> int:
    """Stop clearance runs started in the background (e.g. waiting for an official) before their server goes."""
    import signal
    import time

    def ours(pid: int) -> bool:  # never a process that merely reused the number
        try:
            return b"flows.clearance" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    pids = []
    for pid_file in (get_settings().data_dir / "logs").glob("clearance-*.pid"):
        try:
            pid = int(pid_file.read_text())
        except ValueError:
            pid = 0
        pid_file.unlink(missing_ok=True)
        if pid and ours(pid):
            os.kill(pid, signal.SIGTERM)  # the run reports itself crashed while the server is still up
            pids.append(pid)
    deadline = time.monotonic() + 20
    while any(ours(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if ours(pid):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _outcome(application_id: str, created: bool | None = None) -> dict:
    from customs.services import declaration_status

    status = declaration_status(application_id)
    result = {k: status[k] for k in ("application_id", "status", "submitted_at", "submitted_at_kz", "registration_number", "lane", "risk_profiles", "decision_code", "reasons")}
    if created is not None:
        result["created"] = created
    return result


def _print_outcome(result: dict) -> None:
    typer.echo(f"application id:       {result['application_id']}" + ("" if result.get("created", True) else "  (these bytes were submitted before: existing application)"))
    typer.echo(f"submitted at:         {result['submitted_at_kz']}")
    typer.echo(f"status:               {result['status']}")
    if result.get("registration_number"):
        typer.echo(f"registration number:  {result['registration_number']}")
    if result.get("lane"):
        profiles = ", ".join(result.get("risk_profiles") or []) or "none"
        typer.echo(f"lane:                 {result['lane']} (risk profiles: {profiles})")
    if result.get("decision_code"):
        typer.echo(f"decision:             {result['decision_code']}")
    for reason in result.get("reasons") or []:
        typer.echo(f"  - {reason['code']} at {reason['path']}: {reason['message']}")


@app.command()
def submit(
    declaration: Annotated[Path, typer.Argument(help="The declaration document (JSON, UTF-8).")],
    signature: Annotated[Optional[Path], typer.Option("--signature", help="Detached CMS signature of the declaration (DER, PEM or base64).")] = None,
    attach: Annotated[list[Path], typer.Option("--attach", help="A supporting document; repeat for each.")] = [],
    attach_signature: Annotated[list[Path], typer.Option("--attach-signature", help="Detached signature of the --attach at the same position.")] = [],
    channel: Annotated[str, typer.Option(help="electronic (ASTANA-1), portal (eGov), or paper (entered by an official: --official).")] = "electronic",
    official: Annotated[Optional[str], typer.Option("--official", help="With --channel paper: the id of the official entering the written declaration.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Run the clearance to its next resting state and print the outcome (a declaration awaiting an official is then decided with `customs decide`).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Accept a declaration, fix its submission time and start its clearance."""
    from customs.services import IncomingAttachment, IntakeError, submit_declaration

    if len(attach_signature) > len(attach):
        _fail(f"{len(attach_signature)} --attach-signature for {len(attach)} --attach: each signature follows its attachment", as_json=as_json)
    content = _read(declaration, "declaration")
    sig = _read(signature, "signature") if signature else None
    attachments = [
        IncomingAttachment(path.name, _read(path, "attachment"), _read(attach_signature[i], "attachment signature") if i < len(attach_signature) else None)
        for i, path in enumerate(attach)
    ]
    _prepare_database()
    try:
        submission = submit_declaration(content, sig, attachments, channel=channel, official_id=official)
    except IntakeError as exc:
        _fail(f"{declaration}: {exc}", as_json=as_json, error=exc.as_dict())
    if wait:
        run_clearance(submission.application_id)
    elif submission.created:
        _start_clearance_in_background(submission.application_id)
    result = _outcome(submission.application_id, created=submission.created)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        _print_outcome(result)


@app.command()
def clear(
    application_id: Annotated[str, typer.Argument(help="Application id or registration number.")],
    wait_for_official: Annotated[bool, typer.Option("--wait-for-official", help="Keep waiting (paused) for an official's decision, as a form in the Prefect UI.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run (or re-run) a declaration's clearance to its next resting state; finished steps are not repeated."""
    from customs.services import declaration_status
    from tasks.common import DeclarationNotFound

    _prepare_database()
    try:
        application_id = declaration_status(application_id)["application_id"]
    except DeclarationNotFound as exc:
        _fail(str(exc), as_json=as_json)
    run_clearance(application_id, wait_for_official=wait_for_official)
    result = _outcome(application_id)
    typer.echo(json.dumps(result, ensure_ascii=False)) if as_json else _print_outcome(result)


@app.command()
def status(key: Annotated[str, typer.Argument(help="Application id or registration number.")], as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Status of a declaration with the history of its transitions."""
    from customs.services import declaration_status
    from tasks.common import DeclarationNotFound

    _prepare_database()
    try:
        result = declaration_status(key)
    except DeclarationNotFound as exc:
        _fail(str(exc), as_json=as_json)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    _print_outcome(result)
    typer.echo("history:")
    for event in result["history"]:
        if event["event"] == "transition":
            typer.echo(f"  {event['at_kz']}  {event['from'] or '-':>20} -> {event['to']:<22} by {event['actor']}")
        else:
            typer.echo(f"  {event['at_kz']}  {event['event']:>45} by {event['actor']}")
        for reason in event["reasons"]:
            typer.echo(f"      {reason['code']} at {reason['path']}")


# ----------------------------------------------------------------------------------------------
# Officials


def _official_refused(exc, as_json: bool) -> None:
    _fail(f"{exc.reason.message} [{exc.code}]", as_json=as_json, error=exc.as_dict())


@app.command()
def decide(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    decision: Annotated[str, typer.Argument(help="release or refuse")],
    official: Annotated[str, typer.Option("--official", help="The deciding official's id (reference/officials.json).")],
    grounds: Annotated[list[str], typer.Option("--grounds", help="For refuse: a ground code (repeat for several), e.g. DOCUMENTS_NOT_PROVIDED.")] = [],
    text: Annotated[str, typer.Option("--text", help="The official's own words on the decision.")] = "",
    code: Annotated[Optional[str], typer.Option("--code", help="For release: decision code 10 (default), 11 or 12.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Release or refuse to release a declaration awaiting an official; the waiting flow run gets the same input."""
    import uuid

    from tasks.common import DeclarationNotFound
    from tasks.officials import OfficialActionRefused, ReleaseDecisionInput, decide as decide_release
    from tasks.outbox import dispatch_due_sync

    if decision not in ("release", "refuse"):
        _fail(f"the decision is release or refuse; {decision!r} given", as_json=as_json)
    if decision == "refuse" and code is not None:
        _fail("--code is the release's decision code; a refusal gives --grounds instead", as_json=as_json)
    if decision == "release" and grounds:
        _fail("--grounds are for a refusal; a release gives --code (and --text for remarks)", as_json=as_json)
    _prepare_database()
    run_input = {"decision": decision, "official_id": official, "decision_code": (code or "10") if decision == "release" else None,
                 "grounds": grounds, "grounds_text": text, "decision_id": uuid.uuid4().hex}
    try:  # the rules check (and audit) everything first; the run input is built from what they accepted
        result = decide_release(key, decision=decision, official_id=official, decision_code=run_input["decision_code"], grounds=grounds,
                                grounds_text=text, decision_id=run_input["decision_id"])
    except DeclarationNotFound as exc:
        _fail(str(exc), as_json=as_json)
    except OfficialActionRefused as exc:
        _official_refused(exc, as_json)
    ReleaseDecisionInput.model_validate(run_input)  # what the waiting run will accept
    resumed = resume_waiting_runs(result.application_id, run_input)
    dispatch_due_sync(application_id=result.application_id)
    outcome = {**_outcome(result.application_id), "decided_by": official, "flow_runs_resumed": resumed}
    if as_json:
        typer.echo(json.dumps(outcome, ensure_ascii=False))
        return
    _print_outcome(outcome)
    typer.echo(f"decided by:           {official}" + (f"; flow run {', '.join(resumed)} resumed" if resumed else ""))


@app.command("cancel-release")
def cancel_release_command(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    official: Annotated[str, typer.Option("--official", help="The official's id.")],
    grounds: Annotated[list[str], typer.Option("--grounds", help="A ground code (repeat for several), e.g. DOCUMENTS_INVALID.")] = [],
    text: Annotated[str, typer.Option("--text", help="The official's own words.")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Cancel a release (automatic or by an official) and send the cancellation document."""
    from tasks.common import DeclarationNotFound
    from tasks.officials import OfficialActionRefused, cancel_release
    from tasks.outbox import dispatch_due_sync

    _prepare_database()
    try:
        result = cancel_release(key, official_id=official, grounds=grounds, grounds_text=text)
    except DeclarationNotFound as exc:
        _fail(str(exc), as_json=as_json)
    except OfficialActionRefused as exc:
        _official_refused(exc, as_json)
    dispatch_due_sync(application_id=result.application_id)
    outcome = _outcome(result.application_id)
    typer.echo(json.dumps(outcome, ensure_ascii=False)) if as_json else _print_outcome(outcome)


@app.command()
def marks(
    zone: Annotated[Optional[str], typer.Option(help="Only this zone of customs control.")] = None,
    office: Annotated[Optional[str], typer.Option(help="Only this customs office.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Release marks still to affix after automatic releases, oldest first."""
    from tasks.officials import open_marks

    _prepare_database()
    rows = open_marks(zone=zone, office=office)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['registration_number']:<24} zone {row['zone'] or '-':<10} released {row['released_at_kz']}  open {row['open_minutes']} min")
    if not rows:
        typer.echo("no open release marks")


@app.command()
def mark(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    official: Annotated[str, typer.Option("--official", help="The official affixing the mark (of the zone where the goods were released).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Affix the release mark after an automatic release."""
    from tasks.common import DeclarationNotFound
    from tasks.officials import OfficialActionRefused, affix_mark

    _prepare_database()
    try:
        result = affix_mark(key, official_id=official)
    except DeclarationNotFound as exc:
        _fail(str(exc), as_json=as_json)
    except OfficialActionRefused as exc:
        _official_refused(exc, as_json)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        typer.echo(f"release mark of {result['registration_number']} affixed by {result['affixed_by']} (zone {result['zone']})")


@app.command()
def rerun(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    from_step: Annotated[Optional[str], typer.Option("--from-step", help="signature_check, registration, risk_assessment or release; default: where it stopped.")] = None,
    requested_by: Annotated[str, typer.Option("--by", help="Who asks (recorded in the audit chain).")] = os.environ.get("USER", "operator"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Start the clearance again, as a new flow run, from the step where it failed (steps already done are never redone)."""
    from tasks.common import DeclarationNotFound
    from tasks.rerun import RerunRefused, plan_rerun

    _prepare_database()
    try:
        plan = plan_rerun(key, from_step)
    except DeclarationNotFound as exc:
        _fail(str(exc), as_json=as_json)
    except RerunRefused as exc:
        _fail(exc.message + f" [{exc.code}]", as_json=as_json, error={"code": exc.code, "message": exc.message})
    if not as_json:
        typer.echo(f"re-running {plan.application_id} from {plan.from_step}, asked by {requested_by}")
    run_clearance(plan.application_id, requested_by=requested_by)
    result = _outcome(plan.application_id)
    typer.echo(json.dumps(result, ensure_ascii=False)) if as_json else _print_outcome(result)


@app.command()
def deadlines(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Check release deadlines now: alert supervisors at 75%, record breaches (the deadline watch does this every minute)."""
    from tasks.officials import check_release_deadlines
    from tasks.outbox import dispatch_due_sync

    _prepare_database()
    report = check_release_deadlines()
    dispatch_due_sync()
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        typer.echo(f"alerts raised: {len(report.alerted)}; breaches recorded: {len(report.breached)}")


@app.command()
def ops(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Operations summary: declarations by status, waiting for officials with their deadlines, open release marks, the outbox."""
    from customs.services import operations_summary

    _prepare_database()
    summary = operations_summary()
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))
        return
    typer.echo("declarations: " + ", ".join(f"{k} {v}" for k, v in summary["declarations"].items()))
    typer.echo("lanes (registered): " + (", ".join(f"{k} {v}" for k, v in summary["lanes"].items()) or "none"))
    if summary["oldest_in_progress"]:
        oldest = summary["oldest_in_progress"]
        typer.echo(f"oldest in progress: {oldest['application_id']} at {oldest['status']} for {oldest['resting_minutes']} min")
    typer.echo(f"awaiting an official: {len(summary['awaiting_official'])}")
    for row in summary["awaiting_official"]:
        flag = " BREACHED" if row["breached"] else (" alerted" if row["alerted"] else "")
        typer.echo(f"  {row['registration_number']:<24} zone {row['zone'] or '-':<10} lane {row['lane']:<7} due {row['due_kz']} ({row['minutes_left']} min){flag}")
    typer.echo(f"release marks open: {summary['marks_open']}; overdue (> {summary['mark_overdue_minutes']} min): {len(summary['marks_overdue'])}")
    for row in summary["marks_overdue"]:
        typer.echo(f"  {row['registration_number']:<24} zone {row['zone'] or '-':<10} open {row['open_minutes']} min")
    typer.echo(f"print requests open: {len(summary['print_requests_open'])}")
    for row in summary["print_requests_open"]:
        typer.echo(f"  {row['request_id']:<20} {row['registration_number']:<24} office {row['office']}  {row['minutes_left']} min left")
    if summary["failed_runs"] is None:
        typer.echo("failed clearance runs: unknown (no Prefect server answers)")
    else:
        typer.echo(f"failed clearance runs (24 h): {len(summary['failed_runs'])}")
        for run in summary["failed_runs"][:20]:
            typer.echo(f"  {run['flow_run']:<24} {run['state']:<8} {run['message'][:90]}")
    typer.echo("outbox: " + ", ".join(f"{k} {v}" for k, v in summary["outbox"].items()))


# ----------------------------------------------------------------------------------------------
# Paper copies


@app.command("print-request")
def print_request_command(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    requested_by: Annotated[Optional[str], typer.Option("--requested-by", help="IIN or BIN of the applicant asking (the declarant's or a signer's).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Record the applicant's request for a paper copy: the copy is rendered and queued at the office, due in 30 minutes."""
    from tasks.common import DeclarationNotFound
    from tasks.outbox import dispatch_due_sync
    from tasks.printing import PrintRefused, request_print

    _prepare_database()
    try:
        result = request_print(key, requested_by=requested_by)
    except DeclarationNotFound as exc:
        _fail(str(exc), as_json=as_json, error={"code": "DECLARATION_UNKNOWN", "path": "$", "message": str(exc)})
    except PrintRefused as exc:
        _fail(f"{exc.message} [{exc.code}]", as_json=as_json, error=exc.as_dict())
    dispatch_due_sync(application_id=result.application_id)
    from customs.timeutil import kz_display

    if result.created:  # the precise deadline timers, when `customs serve` runs; print-deadlines watches either way
        from customs.prefect_server import is_healthy, prefect_api, running_api_url

        api_url = running_api_url(get_settings())
        if api_url is not None and is_healthy(api_url):
            try:
                from flows.print_deadlines import schedule_print_timers

                with prefect_api(api_url):
                    schedule_print_timers(result.request_id, result.requested_at + get_settings().print_alert_after, result.due_at)
            except Exception as exc:  # no print-deadline-timer deployment here (customs serve is not running): nothing to say
                if type(exc).__name__ != "ObjectNotFound":
                    typer.secho(f"note: deadline timers not scheduled ({type(exc).__name__}); the every-minute print-deadlines pass covers it", err=True)

    out = {"request_id": result.request_id, "application_id": result.application_id, "registration_number": result.registration_number,
           "office": result.office, "requested_at_kz": kz_display(result.requested_at), "due_at_kz": kz_display(result.due_at),
           "created": result.created}
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    note = "" if result.created else "  (already in the queue: the existing request)"
    typer.echo(f"print request {result.request_id} for {result.registration_number}{note}")
    typer.echo(f"  queued at office {result.office}; requested {out['requested_at_kz']}; due {out['due_at_kz']}")


@app.command("print-queue")
def print_queue_command(
    office: Annotated[Optional[str], typer.Option(help="Only this customs office.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Pending print requests, most urgent first, with the minutes left."""
    from tasks.printing import print_queue

    _prepare_database()
    rows = print_queue(office=office)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        left = f"{row['minutes_left']} min left" if row["minutes_left"] >= 0 else f"OVERDUE by {-row['minutes_left']} min"
        typer.echo(f"{row['request_id']:<20} {row['registration_number']:<24} office {row['office']}  due {row['due_at_kz']}  {left}")
    if not rows:
        typer.echo("no pending print requests")


@app.command("print-copy")
def print_copy_command(
    request_id: Annotated[str, typer.Argument(help="Print request id.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Where to write the PDF (default: REQUEST_ID.pdf).")] = None,
) -> None:
    """Write the rendered copy (PDF) of a print request, to print it."""
    from tasks.printing import PrintRefused, copy_of

    _prepare_database()
    try:
        request, pdf = copy_of(request_id)
    except PrintRefused as exc:
        _fail(f"{exc.message} [{exc.code}]")
    target = output or Path(f"{request_id}.pdf")
    target.write_bytes(pdf)
    typer.echo(f"{target}: copy of {request.registration_number}, {len(pdf)} bytes, SHA-256 {request.pdf_sha256}")


@app.command()
def printed(
    request_id: Annotated[str, typer.Argument(help="Print request id.")],
    official: Annotated[str, typer.Option("--official", help="The official of the office who printed and handed over the copy.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Record that the copy was printed and handed over (after the 30 minutes it is recorded as late)."""
    from tasks.officials import OfficialActionRefused
    from tasks.printing import PrintRefused, mark_printed

    _prepare_database()
    try:
        result = mark_printed(request_id, official_id=official)
    except PrintRefused as exc:
        _fail(f"{exc.message} [{exc.code}]", as_json=as_json, error=exc.as_dict())
    except OfficialActionRefused as exc:
        _official_refused(exc, as_json)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        typer.echo(f"{request_id} printed by {result['printed_by']} after {result['minutes']} min" + (" (LATE: over 30 minutes)" if result["late"] else " (in time)"))


@app.command()
def sla(
    date_from: Annotated[Optional[str], typer.Option("--from", help="First day, YYYY-MM-DD (Kazakhstan date).")] = None,
    date_to: Annotated[Optional[str], typer.Option("--to", help="Last day, YYYY-MM-DD (inclusive).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Paper copies per office: requests, printed in time, late, open, median and 95th-percentile minutes to print."""
    from datetime import date

    from tasks.printing import sla_report

    def day(value: Optional[str], option: str):
        if value is None:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            _fail(f"{option} must be a date YYYY-MM-DD; {value!r} given", as_json=as_json)

    first, last = day(date_from, "--from"), day(date_to, "--to")
    if first and last and first > last:
        _fail(f"--from {first} is after --to {last}", as_json=as_json)
    _prepare_database()
    report = sla_report(date_from=first, date_to=last)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    header = f"{'office':<8}{'requests':>9}{'in time':>9}{'late':>6}{'open':>6}{'overdue':>9}{'median':>8}{'p95':>7}"
    typer.echo(header)
    for row in report["offices"] + [{"office": "all", **report["total"]}]:
        fmt = lambda v: "-" if v is None else v  # noqa: E731
        typer.echo(f"{row['office']:<8}{row['requests']:>9}{row['printed_in_time']:>9}{row['late']:>6}{row['open']:>6}{row['open_overdue']:>9}"
                   f"{fmt(row['median_minutes']):>8}{fmt(row['p95_minutes']):>7}")


# ----------------------------------------------------------------------------------------------
# Running as a service


@app.command("serve")
def serve_command(
    port: Annotated[Optional[int], typer.Option(help="Port of the intake API (default CUSTOMS_API_PORT, 8080).")] = None,
) -> None:
    """Run it all: the Prefect server (or PREFECT_API_URL), the deployments of prefect.yaml, the worker, the intake API."""
    from customs.serve import serve
    from customs.settings import configure

    settings = get_settings()
    if port is not None:
        settings = settings.model_copy(update={"api_port": port})
        configure(settings)
    try:
        serve(settings, echo=typer.echo, exit_watchdog_seconds=45.0)
    except (RuntimeError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def recheck(
    restart: Annotated[bool, typer.Option("--restart/--report-only", help="Start a clearance run for each stuck declaration (needs `customs serve`).")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What batch-recheck does, now: stuck declarations, passed release deadlines, signers revoked since (current CRLs)."""
    from tasks.recheck import batch_recheck_run

    _prepare_database()
    starter = None
    if restart:
        from customs.prefect_server import prefect_api, running_api_url

        api_url = running_api_url(get_settings())
        if api_url is None:
            _fail("--restart needs a running Prefect server with the clearance deployment (customs serve)")

        def starter(application_id: str) -> None:
            from prefect.deployments import run_deployment

            with prefect_api(api_url):
                run_deployment("clearance/clearance", parameters={"application_id": application_id, "requested_by": "batch-recheck"},
                               timeout=0, as_subflow=False, flow_run_name=application_id)
    result = batch_recheck_run(restart=starter)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2, default=str))
        return
    typer.echo(f"read {result['scanned']} declarations; " + (", ".join(f"{k}: {v}" for k, v in result["counts"].items()) or "nothing found"))
    for finding in result["findings"][:50]:
        typer.echo(f"  {finding['application_id']:<20} {finding['status']:<20} {finding['finding']:<34} {finding['action']:<16} {finding['detail']}")


@crl_app.command("refresh")
def crl_refresh_command(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Download the CRLs of CUSTOMS_CRL_URLS into CUSTOMS_CRL_DIR, each checked against its issuer first (what crl-refresh does hourly)."""
    from tasks.crl_refresh import CrlRefreshNotConfigured, PROBLEM_OUTCOMES, refresh_crls

    try:
        report = refresh_crls()
    except CrlRefreshNotConfigured as exc:
        _fail(str(exc), as_json=as_json)
    rows = report.as_dicts()
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        for row in rows:
            typer.echo(f"{row['outcome']:<16} {row.get('code') or '':<24} {row.get('issuer') or '-':<40} no. {row.get('crl_number') or '-':<12} "
                       f"next {row.get('next_update') or '-'}  {row.get('file') or ''}  {row.get('message') or ''}")
        if not rows:
            typer.echo("no CRL URLs configured (CUSTOMS_CRL_URLS)")
    if any(row["outcome"] in PROBLEM_OUTCOMES for row in rows):
        raise typer.Exit(1)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the declaration document (generated from the models)."""
    from models.document import declaration_json_schema

    typer.echo(json.dumps(declaration_json_schema(), ensure_ascii=False, indent=2))


@outbox_app.command("list")
def outbox_list(
    status: Annotated[Optional[str], typer.Option(help="pending, sent, failed or undeliverable.")] = None,
    application: Annotated[Optional[str], typer.Option(help="Only the notices of this application id.")] = None,
    limit: Annotated[int, typer.Option(help="Newest first, at most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List notices, newest first."""
    from customs.services import list_notices

    _prepare_database()
    try:
        rows = list_notices(status=status, application_id=application, limit=limit)
    except ValueError as exc:
        _fail(str(exc), as_json=as_json)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        line = f"{row['id']:>6}  {row['status']:<13} {row['kind']:<22} {row['application_id']:<20} {row['recipient'] or '-':<32} tries {row['attempts']}"
        typer.echo(line + (f"  ({row['last_error'][:80]})" if row["last_error"] and row["status"] != "sent" else ""))
    if not rows:
        typer.echo("no notices")


@outbox_app.command("dispatch")
def outbox_dispatch_command(limit: Annotated[Optional[int], typer.Option(help="At most this many notices.")] = None) -> None:
    """Send the notices that are due now (one pass, in this process; the scheduled flow does the same)."""
    from tasks.outbox import dispatch_due_sync

    _prepare_database()
    settings = get_settings()
    report = dispatch_due_sync(limit=limit)
    where = f"SMTP {settings.smtp_host}:{settings.smtp_port or ''}" if settings.smtp_host else f".eml files in {settings.eml_dir}"
    typer.echo(f"{report.claimed} due, {report.sent} sent ({where}), {report.outcomes['retry']} to retry, {report.outcomes['failed']} failed")
    for error in report.errors[:20]:
        typer.echo(f"  {error}")


@outbox_app.command("requeue")
def outbox_requeue(
    notice_id: Annotated[Optional[int], typer.Argument(help="Notice id (see `customs outbox list`).")] = None,
    to: Annotated[Optional[str], typer.Option("--to", help="Send to this corrected address instead (audited).")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed notice (e.g. after fixing the SMTP settings).")] = False,
    since: Annotated[Optional[str], typer.Option(help="With --all-failed: only those last tried since this ISO time, e.g. 2026-11-26T10:00+05:00.")] = None,
    actor: Annotated[str, typer.Option(help="Who asks (recorded with the attempt).")] = os.environ.get("USER", "operator"),
) -> None:
    """Queue a failed or undeliverable notice again (or every failed one)."""
    from datetime import datetime

    from customs.services import requeue_failed, requeue_notice

    _prepare_database()
    if all_failed:
        if notice_id is not None or to is not None:
            _fail("--all-failed takes no notice id and no --to")
        try:
            moment = datetime.fromisoformat(since) if since else None
        except ValueError:
            _fail(f"--since must be an ISO time such as 2026-11-26T10:00+05:00; {since!r} given")
        if moment is not None and moment.tzinfo is None:
            _fail("--since needs a time zone, e.g. +05:00 for Kazakhstan time")
        typer.echo(f"{requeue_failed(actor=actor, since=moment)} failed notices queued again")
        return
    if notice_id is None:
        _fail("give a notice id, or --all-failed")
    try:
        result = requeue_notice(notice_id, actor=actor, recipient=to)
    except (LookupError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"notice {result['id']} queued again for {result['recipient']}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; name the first broken event."""
    from customs.db import transaction
    from models.audit import verify_chain

    _prepare_database()
    with transaction() as session:
        check = verify_chain(session)
    if check.intact:
        typer.echo(f"audit chain intact: {check.events} events")
        return
    _fail(f"audit chain broken at event {check.broken_seq} (declaration {check.broken_application_id or '?'}): {check.problem}", code=1)


@pki_app.command("init")
def pki_init(directory: Path) -> None:
    """Create a root CA, an issuing CA and their CRLs under DIRECTORY (trust/, crl/, ca/)."""
    from customs.pki import TestPki

    pki = TestPki.create(directory)
    typer.echo(f"test PKI created in {directory}")
    typer.echo(f"  CUSTOMS_TRUST_DIR={pki.trust_dir}")
    typer.echo(f"  CUSTOMS_CRL_DIR={pki.crl_dir}")


@pki_app.command("issue")
def pki_issue(
    directory: Path,
    name: Annotated[str, typer.Option(help="Holder's name (CN).")],
    iin: Annotated[Optional[str], typer.Option(help="IIN, written as SERIALNUMBER=IIN<12 digits>.")] = None,
    bin: Annotated[Optional[str], typer.Option("--bin", help="BIN of the legal entity, written as OU=BIN<12 digits>.")] = None,
    auth: Annotated[bool, typer.Option("--auth", help="An AUTH certificate (no nonRepudiation).")] = False,
    revoked: Annotated[bool, typer.Option("--revoked", help="Revoke it at once and publish a new CRL.")] = False,
    expired: Annotated[bool, typer.Option("--expired", help="Validity entirely in the past.")] = False,
) -> None:
    """Issue a signer certificate and key like NCA's."""
    from datetime import timedelta

    from customs.pki import TestPki
    from customs.timeutil import utcnow

    if not iin and not bin:
        _fail("give --iin, --bin or both")
    if not (directory / "ca" / "state.json").exists():
        _fail(f"{directory} is not a test PKI; create it with `customs pki init {directory}`")
    pki = TestPki(directory)
    now = utcnow()
    window = dict(not_before=now - timedelta(days=400), not_after=now - timedelta(days=30)) if expired else {}
    signer = pki.issue(name=name, iin=iin, bin=bin, auth=auth, **window)
    if revoked:
        pki.revoke(signer.serial)
    typer.echo(f"certificate: {signer.cert_path}")
    typer.echo(f"key:         {signer.key_path}")
    typer.echo(f"chain:       {pki.issuing_cert_path}")
    typer.echo(f"serial:      {signer.serial:x}")


@app.command()
def sign(
    file: Path,
    key: Annotated[Path, typer.Option(help="Signer's private key (PEM).")],
    cert: Annotated[Path, typer.Option(help="Signer's certificate (PEM).")],
    chain: Annotated[list[Path], typer.Option(help="CA certificates to include (PEM).")] = [],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Where to write the signature; default FILE.p7s.")] = None,
) -> None:
    """Write a detached CMS signature of FILE, as NCALayer would."""
    from customs.pki import sign_file

    for path, what in [(file, "file"), (key, "key"), (cert, "certificate"), *[(c, "chain certificate") for c in chain]]:
        if not path.is_file():
            _fail(f"{what} {path} does not exist")
    written = sign_file(file, key=key, cert=cert, chain=tuple(chain), output=output)
    typer.echo(f"signature written to {written}")


@server_app.command("start")
def server_start() -> None:
    """Start the local Prefect server (or find it running)."""
    from customs.prefect_server import PrefectServerError, ensure_server, ui_url

    try:
        api = ensure_server()
    except PrefectServerError as exc:
        _fail(str(exc))
    typer.echo(f"Prefect API: {api}\nPrefect UI:  {ui_url(api)}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server started by this tool."""
    from customs.prefect_server import stop_server

    stopped = _stop_background_clearances()
    if stopped:
        typer.echo(f"stopped {stopped} background clearance run(s) (their declarations keep their state; `customs decide` still works)")
    typer.echo("Prefect server stopped" if stop_server() else "no Prefect server of ours was running")


@app.command()
def demo(
    keep_server: Annotated[bool, typer.Option(help="Leave the Prefect server running so the UI shows the runs.")] = True,
) -> None:
    """The main job on the embedded default: sign the bundled samples with a fresh test PKI and clear them end to end."""
    from customs.demo import run_demo

    run_demo(keep_server=keep_server)


if __name__ == "__main__":  # pragma: no cover
    app()
