"""How an official signs an act from the command line, as NCALayer would on a web page.

Two ways, one of them on every official's command:
- ``--key KEY.pem --cert CERT.pem [--chain CA.pem]``: the act is drafted here (customs.services.official_acts) and
  signed here with the official's own key: a detached CMS, RSA or GOST, as NCALayer's createCMSSignatureFromBase64;
- ``--act ACT.json --signature ACT.json.p7s``: an act drafted before (`customs act draft`) and signed elsewhere
  (NCALayer, a token): the act's own choice, grounds and text are what is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from customs.cli.root import fail
from customs.pki.testing import CmsSigner
from customs.services.official_acts import SignedAct, draft_act

KeyOption = Annotated[
    Optional[Path],
    typer.Option("--key", help="The official's SIGN private key (PEM): the act is drafted and signed here.", show_default=False),
]
CertOption = Annotated[
    Optional[Path],
    typer.Option("--cert", help="The official's NCA certificate (PEM) that goes with --key.", show_default=False),
]
ChainOption = Annotated[
    list[Path], typer.Option("--chain", help="CA certificate(s) to include in the signature (repeat).", show_default=False)
]
ActOption = Annotated[
    Optional[Path],
    typer.Option(
        "--act", help="An act drafted with `customs act draft` and signed elsewhere (with --signature).", show_default=False
    ),
]
SignatureOption = Annotated[
    Optional[Path],
    typer.Option("--signature", help="The detached CMS (.p7s, DER or base64) over the --act file's bytes.", show_default=False),
]


def _read(path: Path, what: str, as_json: bool) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"{what} {path}: {exc.strerror or exc}", as_json=as_json)


def signed_act_from_options(
    kind: str,
    *,
    official_id: str | None,
    key: Path | None,
    cert: Path | None,
    chain: list[Path] | None = None,
    act_file: Path | None = None,
    signature_file: Path | None = None,
    as_json: bool = False,
    **draft: object,
) -> SignedAct:
    """The signed act the options give: drafted and signed here (--key/--cert), or read (--act/--signature)."""
    local, given = (key or cert), (act_file or signature_file)
    if local and given:
        fail("sign here (--key and --cert) or give a signed act (--act and --signature), not both", as_json=as_json)
    if given:
        if not (act_file and signature_file):
            fail("--act and --signature go together: the act's bytes and the CMS over them", as_json=as_json)
        return SignedAct(_read(act_file, "--act", as_json), _read(signature_file, "--signature", as_json))
    if not (key and cert):
        fail(
            "an official's act is signed with the official's own key: give --key KEY.pem --cert CERT.pem, "
            "or --act ACT.json --signature ACT.json.p7s",
            as_json=as_json,
        )
    if not official_id:
        fail("--official names the official whose act this is", as_json=as_json)
    document = draft_act(kind, official_id=official_id, **draft)  # type: ignore[arg-type]
    try:
        signer = CmsSigner(cert, key, tuple(chain or ()))
    except (OSError, ValueError) as exc:
        fail(f"cannot sign with --key {key} and --cert {cert}: {exc}", as_json=as_json)
    return SignedAct(document, signer.sign(document))
