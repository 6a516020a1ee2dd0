"""A test PKI shaped like NCA RK's, and detached CMS signatures as NCALayer makes them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from customs.cli.root import fail
from customs.core.clock import utcnow
from customs.pki.testing import TestPki, sign_file

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

pki_app = typer.Typer(help="A test PKI shaped like NCA RK's (for tests, the demo and integration testing).", no_args_is_help=True)
commands.add_typer(pki_app, name="pki")

ROLES = ("head", "signatory", "financial", "hr", "employee", "none")
Role = Literal[ROLES]


@pki_app.command("init")
def pki_init(directory: Path) -> None:
    """Create a root CA, an issuing CA and their CRLs under DIRECTORY (trust/, crl/, ca/)."""
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
    role: Annotated[
        Role,
        typer.Option(
            "--role",
            help="With --bin, the holder's role in the legal entity, written in the extended key usage as NCA does: "
            "head or signatory may sign for it; financial, hr, employee and none may not.",
        ),
    ] = "head",
    revoked: Annotated[bool, typer.Option("--revoked", help="Revoke it at once and publish a new CRL.")] = False,
    expired: Annotated[bool, typer.Option("--expired", help="Validity entirely in the past.")] = False,
) -> None:
    """Issue a signer certificate and key like NCA's."""
    if not iin and not bin:
        fail("give --iin, --bin or both")
    if not (directory / "ca" / "state.json").exists():
        fail(f"{directory} is not a test PKI; create it with `customs pki init {directory}`")
    pki = TestPki(directory)
    now = utcnow()
    window = dict(not_before=now - timedelta(days=400), not_after=now - timedelta(days=30)) if expired else {}
    signer = pki.issue(name=name, iin=iin, bin=bin, auth=auth, role=None if role == "none" else role, **window)
    if revoked:
        pki.revoke(signer.serial)
    typer.echo(f"certificate: {signer.cert_path}")
    typer.echo(f"key:         {signer.key_path}")
    typer.echo(f"chain:       {pki.issuing_cert_path}")
    typer.echo(f"serial:      {signer.serial:x}")


@commands.command()
def sign(
    file: Path,
    key: Annotated[Path, typer.Option(help="Signer's private key (PEM).")],
    cert: Annotated[Path, typer.Option(help="Signer's certificate (PEM).")],
    chain: Annotated[list[Path], typer.Option(help="CA certificates to include (PEM).")] = [],
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", help="Where to write the signature; default FILE.p7s.")
    ] = None,
) -> None:
    """Write a detached CMS signature of FILE, as NCALayer would."""
    for path, what in [(file, "file"), (key, "key"), (cert, "certificate"), *[(c, "chain certificate") for c in chain]]:
        if not path.is_file():
            fail(f"{what} {path} does not exist")
    written = sign_file(file, key=key, cert=cert, chain=tuple(chain), output=output)
    typer.echo(f"signature written to {written}")
