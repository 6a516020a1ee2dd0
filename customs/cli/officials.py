"""Officials: decisions, cancellation of release, release marks, release deadlines."""

from __future__ import annotations

import json
from typing import Annotated, Literal, Optional

import typer

from customs.cli.root import JsonOption, fail, not_found, outcome, prepare_database, print_outcome, refused, table
from customs.cli.signing import (
    ActOption,
    ActSignatureOption,
    CertOption,
    ChainOption,
    KeyOption,
    OfficialOption,
    signed_act_from_options,
)
from customs.core.db import DeclarationNotFound
from customs.orchestration.decisions import resume_waiting_runs
from customs.rules import Refused
from customs.rules.official_acts import parse_act
from customs.rules.officials import RELEASE_CODES
from customs.services.deadlines import check_release_deadlines
from customs.services.official_acts import SignedAct
from customs.services.officials import affix_mark, cancel_release, open_marks
from customs.services.officials import decide as decide_release
from customs.services.outbox import dispatch_due_sync
from models.reasons import Reason

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

Decision = Literal["release", "refuse"]
ReleaseCode = Literal[tuple(RELEASE_CODES)]


def _act_choice(signed: SignedAct, as_json: bool) -> dict:
    act = parse_act(signed.document)
    if isinstance(act, Reason):
        fail(f"--act: {act.message}", as_json=as_json)
    return dict(act.choice)


@commands.command()
def decide(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    decision: Annotated[Decision, typer.Argument(help="Release the goods, or refuse to (with --grounds).")],
    official: OfficialOption = None,
    grounds: Annotated[
        list[str], typer.Option("--grounds", help="For refuse: a ground code (repeat for several), e.g. DOCUMENTS_NOT_PROVIDED.")
    ] = [],
    text: Annotated[str, typer.Option("--text", help="The official's own words on the decision.")] = "",
    code: Annotated[
        Optional[ReleaseCode],
        typer.Option(
            "--code", help="For release: 10 release permitted (default), 11 against security, 12 before the checks finish."
        ),
    ] = None,
    key_file: KeyOption = None,
    cert: CertOption = None,
    chain: ChainOption = [],
    act_file: ActOption = None,
    signature: ActSignatureOption = None,
    as_json: JsonOption = False,
) -> None:
    """Release or refuse to release a declaration awaiting an official: an act signed with the official's own NCA key
    (--key/--cert here, or --act/--signature signed elsewhere); the waiting flow run is woken and reads it."""
    if decision == "refuse" and code is not None:
        fail("--code is the release's decision code; a refusal gives --grounds instead", as_json=as_json)
    if decision == "release" and grounds:
        fail("--grounds are for a refusal; a release gives --code (and --text for remarks)", as_json=as_json)
    prepare_database()
    choice = {"decision": decision, **({"decision_code": code or "10"} if decision == "release" else {})}
    try:  # the rules check (and audit) everything: the signature, the official, the declaration's state
        signed = signed_act_from_options(
            "decide",
            official_id=official,
            key=key_file,
            cert=cert,
            chain=chain,
            act_file=act_file,
            signature_file=signature,
            as_json=as_json,
            declaration_key=key,
            choice=choice,
            grounds=grounds,
            text=text,
        )
        if act_file is not None and _act_choice(signed, as_json).get("decision") != decision:
            fail(f"the signed act does not decide {decision!r}: {_act_choice(signed, as_json)}", as_json=as_json)
        result = decide_release(key, act=signed, official_id=official)
    except DeclarationNotFound as exc:
        not_found(exc, as_json)
    except Refused as exc:
        refused(exc, as_json)
    resumed = resume_waiting_runs(result.application_id)
    for note in resumed.notes:
        typer.secho(f"note: {note}", err=True)
    dispatch_due_sync(application_id=result.application_id)
    decided_by = parse_act(signed.document).official_id  # the act's official, whose signature was verified
    answer = {
        **outcome(result.application_id),
        "decided_by": decided_by,
        "flow_runs_resumed": resumed.flow_runs,
        "flow_runs_note": resumed.explained(),
    }
    if as_json:
        typer.echo(json.dumps(answer, ensure_ascii=False))
        return
    print_outcome(answer)
    typer.echo(f"decided by:           {decided_by} (signed act)")
    typer.echo(f"waiting flow run:     {resumed.explained()}")


@commands.command("cancel-release")
def cancel_release_command(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    official: OfficialOption = None,
    grounds: Annotated[
        list[str], typer.Option("--grounds", help="A ground code (repeat for several), e.g. DOCUMENTS_INVALID.")
    ] = [],
    text: Annotated[str, typer.Option("--text", help="The official's own words.")] = "",
    key_file: KeyOption = None,
    cert: CertOption = None,
    chain: ChainOption = [],
    act_file: ActOption = None,
    signature: ActSignatureOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a release (automatic or by an official), a signed act, and send the cancellation document."""
    prepare_database()
    try:
        signed = signed_act_from_options(
            "cancel_release",
            official_id=official,
            key=key_file,
            cert=cert,
            chain=chain,
            act_file=act_file,
            signature_file=signature,
            as_json=as_json,
            declaration_key=key,
            grounds=grounds,
            text=text,
        )
        result = cancel_release(key, act=signed, official_id=official)
    except DeclarationNotFound as exc:
        not_found(exc, as_json)
    except Refused as exc:
        refused(exc, as_json)
    dispatch_due_sync(application_id=result.application_id)
    answer = outcome(result.application_id)
    typer.echo(json.dumps(answer, ensure_ascii=False)) if as_json else print_outcome(answer)


@commands.command()
def marks(
    zone: Annotated[Optional[str], typer.Option(help="Only this zone of customs control.")] = None,
    office: Annotated[Optional[str], typer.Option(help="Only this customs office.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Release marks still to affix after automatic releases, oldest first."""
    prepare_database()
    rows = open_marks(zone=zone, office=office)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table(
        ("registration number", "zone", "released at", "open (min)"),
        ((r["registration_number"], r["zone"], r["released_at_kz"], r["open_minutes"]) for r in rows),
        empty="no open release marks",
    )


@commands.command()
def mark(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    official: OfficialOption = None,
    key_file: KeyOption = None,
    cert: CertOption = None,
    chain: ChainOption = [],
    act_file: ActOption = None,
    signature: ActSignatureOption = None,
    as_json: JsonOption = False,
) -> None:
    """Affix the release mark after an automatic release (an official of the zone, a signed act)."""
    prepare_database()
    try:
        signed = signed_act_from_options(
            "affix_release_mark",
            official_id=official,
            key=key_file,
            cert=cert,
            chain=chain,
            act_file=act_file,
            signature_file=signature,
            as_json=as_json,
            declaration_key=key,
        )
        result = affix_mark(key, act=signed, official_id=official)
    except DeclarationNotFound as exc:
        not_found(exc, as_json)
    except Refused as exc:
        refused(exc, as_json)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        typer.echo(f"release mark of {result['registration_number']} affixed by {result['affixed_by']} (zone {result['zone']})")


@commands.command()
def deadlines(as_json: JsonOption = False) -> None:
    """Check release deadlines now: alert supervisors at 75%, record breaches (the deadline watch does this every minute)."""
    prepare_database()
    report = check_release_deadlines()
    dispatch_due_sync()
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        typer.echo(f"alerts raised: {len(report.alerted)}; breaches recorded: {len(report.breached)}")
