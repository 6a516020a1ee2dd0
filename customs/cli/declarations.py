"""Declarations: submit, clear (run the clearance here), rerun."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from customs.cli.root import (
    DEFAULT_OPERATOR,
    ExitCode,
    JsonOption,
    OperatorOption,
    fail,
    not_found,
    operator_of,
    outcome,
    prepare_database,
    print_outcome,
    read_file,
    refused,
)
from customs.core.db import DeclarationNotFound
from customs.orchestration.starting import run_clearance_here, start_in_background
from customs.rules import Refused
from customs.rules.rerun import STEPS
from customs.services.intake import CHANNELS, IncomingAttachment, submit_declaration
from customs.services.queries import declaration_status
from customs.services.rerun import plan_rerun

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
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Run the clearance to its next resting state and print the outcome "
            "(a declaration awaiting an official is then decided with `customs decide`).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Accept a declaration, fix its submission time and start its clearance."""
    if len(attach_signature) > len(attach):
        fail(
            f"{len(attach_signature)} --attach-signature for {len(attach)} --attach: each signature follows its attachment",
            as_json=as_json,
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
        submission = submit_declaration(content, sig, attachments, channel=channel, official_id=official)
    except Refused as exc:
        fail(f"{declaration}: {exc}", ExitCode.REFUSED, as_json=as_json, error=exc.as_dict())
    if wait:
        run_clearance_here(submission.application_id)
    elif submission.created:
        start_in_background(submission.application_id)
    result = outcome(submission.application_id, created=submission.created)
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
            "--wait-for-official", help="Keep waiting (paused) for an official's decision, as a form in the Prefect UI."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run (or re-run) a declaration's clearance to its next resting state; finished steps are not repeated."""
    prepare_database()
    try:
        application_id = declaration_status(application_id)["application_id"]
    except DeclarationNotFound as exc:
        not_found(exc, as_json)
    run_clearance_here(application_id, wait_for_official=wait_for_official)
    result = outcome(application_id)
    typer.echo(json.dumps(result, ensure_ascii=False)) if as_json else print_outcome(result)


@commands.command()
def rerun(
    key: Annotated[str, typer.Argument(help="Application id or registration number.")],
    from_step: Annotated[
        Optional[Step], typer.Option("--from-step", help="The step to start from; default: where it stopped.")
    ] = None,
    operator: OperatorOption = DEFAULT_OPERATOR,
    by: Annotated[Optional[str], typer.Option("--by", hidden=True, help="Deprecated: --operator.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Start the clearance again, as a new flow run, from the step where it failed (steps already done are never redone)."""
    requested_by = operator_of(operator, by, "--by")
    prepare_database()
    try:
        plan = plan_rerun(key, from_step)
    except DeclarationNotFound as exc:
        not_found(exc, as_json)
    except Refused as exc:
        refused(exc, as_json)
    if not as_json:
        typer.echo(f"re-running {plan.application_id} from {plan.from_step}, asked by {requested_by}")
    run_clearance_here(plan.application_id, requested_by=requested_by)
    result = outcome(plan.application_id)
    typer.echo(json.dumps(result, ensure_ascii=False)) if as_json else print_outcome(result)
