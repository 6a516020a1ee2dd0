"""The append-only, hash-chained audit trail, and its anchors outside the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from customs.cli.root import ExitCode, fail, prepare_database, table
from customs.core.clock import kz_display
from customs.core.settings import get_settings
from customs.services.audit_anchors import AnchorRefused, verify_audit_anchors, write_anchor
from customs.services.official_acts import verify_official_acts
from customs.services.queries import verify_audit_chain, verify_declaration_statuses
from models.audit import LEGACY_CHAIN

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

audit_app = typer.Typer(help="The append-only, hash-chained audit trail (one chain per customs office).", no_args_is_help=True)
commands.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    public_key: Annotated[
        Optional[Path],
        typer.Option(
            "--public-key",
            help="Check the anchors with this public key too (a copy kept away from this host).",
        ),
    ] = None,
    copy: Annotated[
        Optional[Path],
        typer.Option(
            "--copy",
            help="Compare the anchors with this copy of them (default: the one in CUSTOMS_AUDIT_ANCHOR_COPY_DIR, if set).",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the verdict, not the table of official acts.")] = False,
) -> None:
    """Recompute every audit chain and check it against the signed anchors (exit 1 when one is broken).

    One chain per customs office; a broken one is named with its first broken event, or the anchor it contradicts.
    Every official act in the trail is listed with its official and certificate, its signature verified again over
    the act as stored (a stored act or signature changed since is an error). Every declaration's status must be the
    one its last transition in the trail made it."""
    prepare_database()
    check = verify_audit_chain()
    anchors = verify_audit_anchors(public_key_file=public_key, copy=copy)
    acts = verify_official_acts()
    statuses = verify_declaration_statuses()
    for warning in anchors.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    if acts.unsigned:
        typer.secho(
            f"warning: {len(acts.unsigned)} official decision(s) recorded before acts were signed (no signature to show), "
            f"the first: {acts.unsigned[0]}",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if not quiet:
        _print_acts(acts.acts)
    problems = list(anchors.problems) + list(acts.problems) + [str(mismatch) for mismatch in statuses]
    if not check.intact:
        problems.insert(
            0,
            f"audit chain {check.chain} broken at event {check.broken_seq} (declaration {check.broken_application_id or '?'}): "
            f"{check.problem}",
        )
    if problems:
        for problem in problems[:-1]:
            typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
        fail(problems[-1], ExitCode.PROBLEM)
    if anchors.last is None:
        anchored = f"no events and no anchors yet in {anchors.file}"
    else:
        anchored = (
            f"{anchors.anchors} anchor{'s' if anchors.anchors != 1 else ''} checked"
            f"{f' (with the copy {anchors.copy})' if anchors.copy else ''}, the last at {kz_display(anchors.last.anchored_at)} "
            f"({anchors.unanchored} event{'s' if anchors.unanchored != 1 else ''} after it, not anchored yet)"
        )
    typer.echo(
        f"audit chains intact: {check.events} events in {check.chains} chain{'s' if check.chains != 1 else ''}; {anchored}; "
        f"{len(acts.acts)} official act{'s' if len(acts.acts) != 1 else ''} proven by the signatures of the officials named"
    )


def _print_acts(acts: list[dict]) -> None:
    """Who did each official act, with which certificate: the audit's answer to "who decided, and prove it"."""
    if not acts:
        return
    table(
        ("at", "declaration", "act", "official", "certificate serial", "key", "signature"),
        (
            (
                kz_display(a["at"]),
                a["registration_number"] or a["application_id"],
                a["what"],
                a["official_id"],
                a["cert_serial"],
                a["algorithm"] or "-",
                "verified" if a["proven"] else "NOT PROVEN",
            )
            for a in acts
        ),
    )


@audit_app.command("anchor")
def audit_anchor() -> None:
    """Sign the head of every audit chain and append it to the anchor file.

    What deadline-watch does once per CUSTOMS_AUDIT_ANCHOR_INTERVAL and the job gate every minute the chains grew,
    with the service's key (copied to CUSTOMS_AUDIT_ANCHOR_COPY_DIR when set)."""
    prepare_database()
    try:
        anchor = write_anchor()
    except AnchorRefused as exc:
        fail(str(exc), ExitCode.PROBLEM)
    except OSError as exc:
        fail(f"cannot write the audit anchor: {exc}", ExitCode.PROBLEM)
    assert anchor is not None
    settings = get_settings()
    typer.echo(f"audit anchor {anchor.number} written to {settings.anchor_path} at {kz_display(anchor.anchored_at)}")
    table(
        ("chain", "events", "last hash"),
        ((name, head.seq, head.last_hash) for name, head in anchor.heads().items() if head.seq or name != LEGACY_CHAIN),
        indent="  ",
    )
    typer.echo(f"public key: {settings.anchor_public_key_path} (SHA-256 {anchor.key})")
    if settings.audit_anchor_public_key is None:
        typer.echo(f"pin it in the service's configuration: CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY={anchor.key}")
