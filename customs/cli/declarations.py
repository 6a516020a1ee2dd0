"""Declarations: submit, clear, rerun: each starts a run of the clearance deployment (customs.orchestration.starting)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from customs.cli.progress import waiting
from customs.cli.root import (
    ExitCode,
    JsonOption,
    fail,
    not_found,
    outcome,
    prepare_database,
    print_outcome,
    read_file,
    refused,
)
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
from customs.orchestration.starting import Launched, launch_clearance
from customs.rules import Refused
from customs.rules.rerun import STEPS
from customs.services.intake import CHANNELS, IncomingAttachment, paper_act_subject, submit_declaration
from customs.services.queries import declaration_status
from customs.services.rerun import request_rerun, rerun_choice

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

Channel = Literal[CHANNELS]
Step = Literal[STEPS]


@commands.command()
def submit(
    declaration: Annotated[Path, typer.Argument(help="The declaration document (JSON, UTF-8).")],
    signature: Annotated[
        Optional[Path], typer.Option("--signature", help="Detached CMS signature of the declaration (DER, PEM or base64).")
    ] = None,
    attach: Annotated[list[Path], typer.Option("--attach", help="A supporting document; repeat for each.")] = [],
    attach_signature: Annotated[
        list[Path], typer.Option("--attach-signature", help="Detached signature of the --attach at the same position.")
    ] = [],
    channel: Annotated[
        Channel, typer.Option(help="electronic (ASTANA-1), portal (eGov), or paper (entered by an official: --official).")
    ] = "electronic",
    official: Annotated[
        Optional[str],
        typer.Option("--official", help="With --channel paper: the id of the official entering the written declaration."),
    ] = None,
    key: KeyOption = None,
    cert: CertOption = None,
    chain: ChainOption = [],
    act: ActOption = None,
    act_signature: Annotated[
        Optional[Path],
        typer.Option("--act-signature", help="With --act: its detached CMS signature (--signature is the declaration's)."),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Wait until the clearance run rests (released, refused, or Suspended waiting for an official: then "
            "decided with `customs decide`) and print the outcome.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Accept a declaration, fix its submission time and start its clearance. A paper declaration is entered by an
    official's act signed with their own NCA key (--official with --key and --cert, or --act and --act-signature)."""
    if channel != "paper" and (key or cert or chain or act or act_signature):
        fail(
            "--key, --cert, --act and --act-signature sign an official's entry of a paper declaration (--channel paper)",
            as_json=as_json,
            path="channel",
        )
    if len(attach_signature) > len(attach):
        fail(
            f"{len(attach_signature)} --attach-signature for {len(attach)} --attach: each signature follows its attachment",
            as_json=as_json,
        )
    beside = declaration.with_name(declaration.name + ".p7s")  # where `customs sign` writes it
    if channel != "paper" and signature is None and beside.is_file():
        fail(
            f"no --signature given, and {beside} is beside the declaration: submitted unsigned, it would be refused "
            f"(SIGNATURE_MISSING); give --signature {beside}",
            as_json=as_json,
            path="signature",
        )
    content = read_file(declaration, "declaration", as_json=as_json)
    sig = read_file(signature, "signature", as_json=as_json) if signature else None
    attachments = [
        IncomingAttachment(
            path.name,
            read_file(path, "attachment", as_json=as_json),
            read_file(attach_signature[i], "attachment signature", as_json=as_json) if i < len(attach_signature) else None,
        )
        for i, path in enumerate(attach)
    ]
    prepare_database()
    try:
        signed = None
        if channel == "paper":
            signed = signed_act_from_options(
                "enter_paper_declaration",
                official,
                key,
                cert,
                chain,
                act,
                act_signature,
                as_json=as_json,
                signature_option="--act-signature",
                subject=paper_act_subject(content) if act is None else None,
            )
        submission = submit_declaration(content, sig, attachments, channel=channel, official_id=official, act=signed)
    except Refused as exc:
        fail(f"{declaration}: {exc}", ExitCode.REFUSED, as_json=as_json, error=exc.as_dict())
    launched = None
    if wait or submission.created:  # one run per submission (idempotency key intake:<id>, as the intake API's)
        launched = launch_clearance(submission.application_id, wait=wait, progress=waiting)
    result = outcome(submission.application_id, created=submission.created)
    if launched is not None and not as_json:
        _say(launched)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        print_outcome(result)


@commands.command()
def clear(
    application_id: Annotated[str, typer.Argument(help="Application id or registration number.")],
    wait_for_official: Annotated[
        bool,
        typer.Option(
            "--wait-for-official",
            hidden=True,
            help="No effect (kept for scripts): a run that waits for an official is Suspended, and the command returns.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run (or re-run) a declaration's clearance, as a new run of the clearance deployment, to its next resting state
    (finished steps are not repeated; a declaration waiting for an official leaves its run Suspended)."""
    prepare_database()
    try:
        application_id = declaration_status(application_id)["application_id"]
    except DeclarationNotFound as exc:
        not_found(exc, as_json)
    launched = launch_clearance(application_id, idempotency_key=f"clear:{application_id}:{uuid.uuid4().hex}", progress=waiting)
    result = outcome(application_id)
    if not as_json:
        _say(launched)
    typer.echo(json.dumps(result, ensure_ascii=False)) if as_json else print_outcome(result)


@commands.command()
def rerun(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    from_step: Annotated[
        Optional[Step], typer.Option("--from-step", help="The step to start from; default: where it stopped.")
    ] = None,
    official: OfficialOption = None,
    key_file: KeyOption = None,
    cert: CertOption = None,
    chain: ChainOption = [],
    act: ActOption = None,
    signature: ActSignatureOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start the clearance again, as a new flow run, from the step where it failed (steps already done are never
    redone), by an official's act signed with their own NCA key (rerun): the audit chain names the act."""
    prepare_database()
    try:
        signed = signed_act_from_options(
            "rerun",
            official,
            key_file,
            cert,
            chain,
            act,
            signature,
            as_json=as_json,
            declaration_key=key,
            choice=rerun_choice(key, from_step) if act is None else None,
        )
        plan = request_rerun(key, act=signed, from_step=from_step, official_id=official)
    except DeclarationNotFound as exc:
        not_found(exc, as_json)
    except Refused as exc:
        refused(exc, as_json)
    if not as_json:
        typer.echo(f"re-running {plan.application_id} from {plan.from_step}, signed act {plan.rerun_act}")
    launched = launch_clearance(
        plan.application_id,
        rerun_act=plan.rerun_act,
        idempotency_key=f"rerun:{plan.application_id}:{plan.rerun_act}",
        progress=waiting,
    )
    result = outcome(plan.application_id)
    if not as_json:
        _say(launched)
    typer.echo(json.dumps(result, ensure_ascii=False)) if as_json else print_outcome(result)


def _say(launched: Launched) -> None:
    typer.echo(launched.explained(), err=launched.failed)
