"""Is a document the authority sent genuine: a letter's decision.json (and its decision.json.p7s) or a paper copy."""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Annotated, Optional

import typer

from customs.cli.root import ExitCode, JsonOption, fail, prepare_database
from customs.services.documents import DocumentInputError, VerificationUnavailable, verify_document

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS


def _read(path: Path, what: str, as_json: bool) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror}", ExitCode.REFUSED, as_json=as_json, code="DOCUMENT_INVALID", path=what)


def _from_letter(content: bytes) -> tuple[bytes, bytes | None] | None:
    """decision.json and decision.json.p7s of a letter (.eml), or None when it is not a letter carrying one."""
    if content.startswith(b"%PDF-") or content.lstrip()[:1] in (b"{", b"["):
        return None
    message = BytesParser(policy=policy.default).parsebytes(content)
    files = {part.get_filename(): part.get_payload(decode=True) for part in message.iter_attachments()}
    if "decision.json" not in files:
        return None
    return files["decision.json"], files.get("decision.json.p7s")


@commands.command("verify-document")
def verify_document_command(
    file: Annotated[Path, typer.Argument(help="decision.json, a paper copy's PDF, or a letter (.eml) carrying decision.json.")],
    signature: Annotated[
        Optional[Path],
        typer.Option(
            "--signature",
            help="Its detached CMS (decision.json.p7s; a GOST-signed copy's .p7s). Default: FILE.p7s when it exists; "
            "a PDF's embedded signature otherwise.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check that a document is signed by the authority's service certificate (chain, CRL, key usage, algorithm) and
    whether what it states still holds in the database. Exit 0 genuine, 1 not genuine, 3 input that cannot be checked."""
    content = _read(file, "document", as_json)
    signature_bytes, signature_name = None, None
    letter = None if signature else _from_letter(content)
    if letter is not None:
        content, signature_bytes = letter
        signature_name = f"decision.json.p7s of {file.name}" if signature_bytes else None
        filename = f"decision.json of {file.name}"
    else:
        filename = file.name
        if signature is None and Path(f"{file}.p7s").is_file():
            signature = Path(f"{file}.p7s")
        if signature is not None:
            signature_bytes, signature_name = _read(signature, "signature", as_json), signature.name
    prepare_database()
    try:
        check = verify_document(content, signature_bytes, filename=filename, signature_name=signature_name)
    except DocumentInputError as exc:
        fail(exc.message, ExitCode.REFUSED, as_json=as_json, code="DOCUMENT_INVALID", path=exc.path)
    except VerificationUnavailable as exc:
        fail(str(exc), ExitCode.PROBLEM, as_json=as_json, code="VERIFICATION_UNAVAILABLE")
    result = check.as_dict()
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        _print(result, filename)
    raise typer.Exit(int(ExitCode.OK if check.genuine else ExitCode.PROBLEM))


def _print(result: dict, filename: str) -> None:
    if result["genuine"]:
        typer.secho(f"{filename}: GENUINE, signed by the authority", fg=typer.colors.GREEN, bold=True)
    else:
        typer.secho(f"{filename}: NOT GENUINE", fg=typer.colors.RED, bold=True)
    typer.echo(f"  signature: {result['signature']}" + (f", signed {result['signed_at']}" if result["signed_at"] else ""))
    for reason in result["reasons"]:
        typer.echo(f"  - {reason['code']}: {reason['message']}")
    signer = result["signer"]
    if signer:
        typer.echo(
            f"  signer:    {signer['name'] or signer['subject']}, BIN {signer['bin'] or '-'}"
            + (f", IIN {signer['iin']}" if signer["iin"] else "")
            + f", serial {signer['serial']}, {signer['algorithm']}"
        )
    states = result["states"]
    if states:
        typer.echo(
            f"  states:    {states['decision']} of {states['registration_number']} (application {states['application_id']}), "
            f"code {states['decision_code'] or '-'}, at {states['decided_at']}"
        )
    database = result["database"]
    if database:
        typer.echo(f"  database:  {database['message']}")
