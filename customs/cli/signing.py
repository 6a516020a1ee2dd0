"""Officials' acts on the command line: each is a signed document (customs.services.official_acts).

Every command that carries out an official's act takes the same options and gets its ``SignedAct`` from
``signed_act_from_options``:

- ``--official OID --key KEY.pem --cert CERT.pem [--chain CA.pem ...]``: the act is drafted here and signed here
  with the official's NCA SIGN key, as NCALayer would (customs.pki.testing.CmsSigner);
- ``--act ACT.json --signature ACT.json.p7s``: an act drafted before (`customs act draft`) and signed elsewhere
  (NCALayer, `customs sign`), given exactly as signed.

Missing or conflicting options are usage errors (exit 2) before anything is done. ``customs act draft`` writes
the canonical document of an act, to be signed elsewhere.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError

from customs.cli.root import fail, not_found, prepare_database, read_file, refused
from customs.core.db import DeclarationNotFound
from customs.rules import Refused
from customs.services.official_acts import SignedAct, draft_act
from models.official_act import ACT_KINDS

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

act_app = typer.Typer(help="Officials' acts: the documents an official signs.", no_args_is_help=True)
commands.add_typer(act_app, name="act")

# The options every command carrying out an official's act takes (one name and one help each).
OfficialOption = Annotated[
    Optional[str],
    typer.Option(
        "--official",
        envvar="CUSTOMS_OFFICIAL",
        help="The official acting (reference/officials.json; default $CUSTOMS_OFFICIAL): the act names them and is "
        "signed with their own NCA key.",
        show_default=False,
    ),
]
KeyOption = Annotated[
    Optional[Path],
    typer.Option("--key", help="The official's NCA SIGN private key (PEM): the act is drafted and signed here, with --cert."),
]
CertOption = Annotated[Optional[Path], typer.Option("--cert", help="The official's NCA SIGN certificate (PEM), with --key.")]
ChainOption = Annotated[
    list[Path], typer.Option("--chain", help="A CA certificate (PEM) to put in the signature, with --key (repeat).")
]
ActOption = Annotated[
    Optional[Path],
    typer.Option("--act", help="An act drafted before (`customs act draft`) and signed elsewhere, with --signature."),
]
ActSignatureOption = Annotated[
    Optional[Path],
    typer.Option("--signature", help="With --act: its detached CMS signature (NCALayer's, or `customs sign`)."),
]


def signed_act_from_options(
    kind: str,
    official_id: str | None,
    key: Path | None,
    cert: Path | None,
    chain: list[Path] | tuple[Path, ...] | None,
    act_file: Path | None,
    signature_file: Path | None,
    *,
    as_json: bool = False,
    signature_option: str = "--signature",
    **draft_args: Any,
) -> SignedAct:
    """The act ``kind`` as the options give it: drafted (``draft_args``: ``declaration_key``, ``subject``, ``choice``,
    ``grounds``, ``text``, as ``draft_act`` takes them) and signed here with --key/--cert, or read from --act and
    its signature. Which official the act names, what it says and whether the signature proves them is checked by
    the service, which audits a refusal; this only refuses options that do not make one act (exit 2).
    ``signature_option``: the name of the act's signature option where --signature means something else."""
    local = key is not None or cert is not None or bool(chain)
    given = act_file is not None or signature_file is not None
    if local and given:
        fail(
            f"give --key and --cert (the act is signed here) or --act and {signature_option} (signed elsewhere), not both",
            as_json=as_json,
            path="act",
        )
    if given:
        if act_file is None or signature_file is None:
            fail(f"--act and {signature_option} go together: the act and its detached signature", as_json=as_json, path="act")
        return SignedAct(read_file(act_file, "act", as_json=as_json), read_file(signature_file, "act signature", as_json=as_json))
    if not local:
        fail(
            f"an official's act is signed: give --key and --cert of the official's NCA SIGN certificate (signed here), "
            f"or --act and {signature_option} (an act drafted with `customs act draft` and signed elsewhere)",
            as_json=as_json,
            path="act",
        )
    if key is None or cert is None:
        fail("--key and --cert go together: the official's NCA SIGN key and its certificate", as_json=as_json, path="key")
    if not official_id:
        fail("give --official (or $CUSTOMS_OFFICIAL): the act names the official who signs it", as_json=as_json, path="official")
    signer = _signer(key, cert, list(chain or ()), as_json)
    return SignedAct(document := _draft(kind, official_id, as_json, **draft_args), signer.sign(document))


def _signer(key: Path, cert: Path, chain: list[Path], as_json: bool):
    from customs.pki.testing import CmsSigner  # cryptography and pyHanko: only when signing here

    for path, what in ((key, "key"), (cert, "certificate"), *((p, "chain certificate") for p in chain)):
        read_file(path, what, as_json=as_json)
    try:
        return CmsSigner(cert, key, tuple(chain))
    except (ValueError, TypeError) as exc:
        fail(f"cannot sign with --key {key} and --cert {cert}: {exc}", as_json=as_json, path="key")


def _draft(kind: str, official_id: str, as_json: bool, **draft_args: Any) -> bytes:
    try:
        return draft_act(kind, official_id=official_id, **draft_args)
    except DeclarationNotFound as exc:
        not_found(exc, as_json)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "act"
        fail(f"the act cannot be drafted: {where}: {first['msg']}", as_json=as_json, path=f"act.{where}")


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            fail(f"{option} takes NAME=VALUE, e.g. {option} from_step=registration; {value!r} given", path=option.lstrip("-"))
        if name in pairs:
            fail(f"{option} {name} is given twice", path=option.lstrip("-"))
        pairs[name] = text
    return pairs


# What the ID of `customs act draft KIND ID` is, for each kind.
DECLARATION_ACTS = ("decide", "cancel_release", "affix_release_mark", "rerun")
ID_HELP = (
    "What the act is about: a declaration's application id or registration number (decide, cancel_release, "
    "affix_release_mark, rerun), a print request id (mark_printed), the paper declaration's file "
    "(enter_paper_declaration), a notice id or `failed` (requeue_notice: every failed notice, with --since)."
)


def draft_args_for(kind: str, target: str, *, since: str | None = None, to: str | None = None) -> dict[str, Any]:
    """``draft_act``'s arguments naming what an act of ``kind`` is about (``target``: see ID_HELP)."""
    if kind in DECLARATION_ACTS:
        return {"declaration_key": target}
    if kind == "mark_printed":
        from customs.services.printing import print_act_subject

        return {"subject": print_act_subject(target)}
    if kind == "enter_paper_declaration":
        from customs.services.intake import paper_act_subject

        return {"subject": paper_act_subject(read_file(Path(target), "declaration"))}
    if kind == "requeue_notice":
        from customs.services.outbox import requeue_subject

        if target == "failed":
            return {"subject": requeue_subject(since=since_moment(since))}
        if not target.isdigit():
            fail(f"requeue_notice is about a notice id or `failed`; {target!r} given", path="id")
        return {"subject": requeue_subject(int(target))} | ({"choice": {"to": to}} if to is not None else {})
    fail(f"the act is one of {', '.join(ACT_KINDS)}; {kind!r} given", path="kind")


def since_moment(since: str | None, *, as_json: bool = False) -> datetime | None:
    """``--since`` of a requeue of every failed notice: an ISO time with its zone."""
    if since is None:
        return None
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        fail(f"--since must be an ISO time such as 2026-11-26T10:00+05:00; {since!r} given", as_json=as_json, path="since")
    if moment.tzinfo is None:
        fail("--since needs a time zone, e.g. +05:00 for Kazakhstan time", as_json=as_json, path="since")
    return moment


@act_app.command("draft")
def draft(
    kind: Annotated[str, typer.Argument(help=f"The act: {', '.join(ACT_KINDS)}.", show_default=False)],
    target: Annotated[str, typer.Argument(metavar="ID", help=ID_HELP, show_default=False)],
    official: OfficialOption = None,
    choice: Annotated[
        list[str],
        typer.Option(
            "--choice", help="What is chosen, NAME=VALUE (repeat): decision=release, decision_code=10, from_step=registration."
        ),
    ] = [],
    grounds: Annotated[list[str], typer.Option("--grounds", help="A ground code (repeat for several).")] = [],
    text: Annotated[str, typer.Option("--text", help="The official's own words.")] = "",
    since: Annotated[
        Optional[str], typer.Option("--since", help="requeue_notice failed: only notices last tried since this ISO time.")
    ] = None,
    to: Annotated[Optional[str], typer.Option("--to", help="requeue_notice: the corrected address to send to.")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Where to write the act (default: stdout).")] = None,
) -> None:
    """Write the canonical document of an official's act, to be signed as it is (NCALayer, `customs sign`) and given
    with --act and --signature. It is dated now and taken within CUSTOMS_OFFICIAL_ACT_MAX_AGE (10 minutes)."""
    if kind not in ACT_KINDS:
        fail(f"the act is one of {', '.join(ACT_KINDS)}; {kind!r} given", path="kind")
    if not official:
        fail("give --official (or $CUSTOMS_OFFICIAL): the act names the official who signs it", path="official")
    if (since is not None and (kind != "requeue_notice" or target != "failed")) or (to is not None and kind != "requeue_notice"):
        fail("--since is for `requeue_notice failed`, --to for `requeue_notice NOTICE_ID`", path="since" if since else "to")
    prepare_database()
    try:
        args = draft_args_for(kind, target, since=since, to=to)
    except Refused as exc:
        refused(exc, False)
    if choice:
        args["choice"] = args.get("choice", {}) | _pairs(choice, "--choice")
    document = _draft(kind, official, False, grounds=grounds or None, text=text, **args)
    if output is None:
        typer.echo(document.decode("utf-8"), nl=False)  # exactly the bytes to sign: `> ACT.json` keeps them
        return
    output.write_bytes(document)
    typer.echo(
        f"{output}: act {kind} of {official}, {len(document)} bytes, SHA-256 {hashlib.sha256(document).hexdigest()}; "
        f"sign it as it is (e.g. customs sign {output} --key ... --cert ...) within the next minutes"
    )
