"""A test PKI shaped like NCA RK's, and detached CMS signatures as NCALayer makes them."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from customs.cli.root import fail
from customs.core.clock import utcnow
from customs.core.reference import load_reference
from customs.core.settings import get_settings
from customs.pki.testing import FAMILIES, TestPki, sign_file

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS

pki_app = typer.Typer(help="A test PKI shaped like NCA RK's (for tests, the demo and integration testing).", no_args_is_help=True)
commands.add_typer(pki_app, name="pki")

ROLES = ("head", "signatory", "financial", "hr", "employee", "none")
Role = Literal[ROLES]
Alg = Enum("Alg", {name.replace("-", "_"): name for name in FAMILIES}, type=str)  # rsa, gost2004, gost2015, ...
ALG_HELP = (
    "rsa (RSA 2048, SHA-256); gost2004 (GOST 34.310-2004 with GOST 34.311-95, as NCA's legal-entity keys); "
    "gost2015 (GOST 34.10-2015, 512 bits, with GOST 34.11-2015); gost2015-256 (the same, 256 bits)."
)


@pki_app.command("init")
def pki_init(
    directory: Path,
    alg: Annotated[
        list[Alg],
        typer.Option("--alg", help=f"Algorithm families to create, each its own root and issuing CA (repeat it): {ALG_HELP}"),
    ] = [Alg.rsa, Alg.gost2004, Alg.gost2015],
) -> None:
    """Create root and issuing CAs and their CRLs under DIRECTORY (trust/, crl/, ca/), one pair per --alg."""
    families = tuple(dict.fromkeys(a.value for a in alg))
    pki = TestPki.create(directory, families=families)
    typer.echo(f"test PKI created in {directory} ({', '.join(families)})")
    typer.echo(f"  CUSTOMS_TRUST_DIR={pki.trust_dir}")
    typer.echo(f"  CUSTOMS_CRL_DIR={pki.crl_dir}")


@pki_app.command("issue")
def pki_issue(
    directory: Path,
    name: Annotated[
        Optional[str], typer.Option(help="Holder's name (CN); with --authority, КГД МФ РК by default (the full name goes in O).")
    ] = None,
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
    alg: Annotated[Alg, typer.Option("--alg", help=f"The issuing CA's family and the key's algorithm: {ALG_HELP}")] = Alg.rsa,
    revoked: Annotated[bool, typer.Option("--revoked", help="Revoke it at once and publish a new CRL.")] = False,
    expired: Annotated[bool, typer.Option("--expired", help="Validity entirely in the past.")] = False,
    official: Annotated[
        Optional[str],
        typer.Option(
            "--official",
            help="An official of reference/officials.json: their employee certificate of the revenue authority (name, "
            "IIN and the authority's BIN from the reference data, role employee), to sign their acts with.",
        ),
    ] = None,
    authority: Annotated[
        bool,
        typer.Option(
            "--authority",
            help="The revenue authority's service certificate (CUSTOMS_AUTHORITY_CERT): a legal entity certificate of "
            "the authority's BIN (reference/officials.json), no IIN, SIGN usage.",
        ),
    ] = False,
) -> None:
    """Issue a signer certificate and key like NCA's."""
    if official and authority:
        fail("--official or --authority, not both")
    if official and (name or iin or bin):
        fail("--official takes the name, IIN and BIN from reference/officials.json: give no --name, --iin or --bin")
    if authority:
        if iin or auth or role != "head":
            fail("--authority issues the service certificate: no --iin, --auth or --role with it")
        found = load_reference(get_settings().reference_dir).authority
        if found is None:
            fail(f"{get_settings().reference_dir}/officials.json names no authority")
        if bin and bin != found.bin:
            fail(f"--bin {bin} is not the authority's BIN {found.bin} (reference/officials.json)")
        bin, role, organization = found.bin, "none", found.name
    if not name and not authority and not official:
        fail("give --name (or --official, or --authority)")
    if not official and not iin and not bin:
        fail("give --iin, --bin or both")
    if not (directory / "ca" / "state.json").exists():
        fail(f"{directory} is not a test PKI; create it with `customs pki init {directory}`")
    pki = TestPki(directory)
    alg = alg.value
    if alg not in pki.families:
        fail(f"{directory} has no {alg} CA (it has {', '.join(pki.families)}); create one with `customs pki init --alg {alg}`")
    now = utcnow()
    window = dict(not_before=now - timedelta(days=400), not_after=now - timedelta(days=30)) if expired else {}
    if official:
        reference = load_reference(get_settings().reference_dir)
        if official not in reference.officials:
            fail(f"{official!r} is not an official of {get_settings().reference_dir / 'officials.json'}")
        signer = pki.issue_official(reference.officials[official], reference.authority, family=alg, auth=auth, **window)
    elif authority:
        signer = pki.issue_authority(
            bin=bin,
            family=alg,
            organization=organization,
            label=f"authority-{alg}-{utcnow():%Y%m%d%H%M%S}",
            **({"name": name} if name else {}),
            **window,
        )
    else:
        role_oid = None if role == "none" else role
        signer = pki.issue(name=name, iin=iin, bin=bin, auth=auth, role=role_oid, family=alg, **window)
    if revoked:
        pki.revoke(signer.serial, family=alg)
    typer.echo(f"certificate: {signer.cert_path}")
    typer.echo(f"key:         {signer.key_path}")
    typer.echo(f"chain:       {pki.issuing_cert_path_of(alg)}")
    typer.echo(f"serial:      {signer.serial:x}")
    if authority:
        typer.echo(f"  CUSTOMS_AUTHORITY_CERT={signer.cert_path}")
        typer.echo(f"  CUSTOMS_AUTHORITY_KEY={signer.key_path}")
        typer.echo(f"  CUSTOMS_AUTHORITY_CHAIN={pki.issuing_cert_path_of(alg)}")


@commands.command()
def sign(
    file: Path,
    key: Annotated[Path, typer.Option(help="Signer's private key (PEM): RSA, EC, or a GOST key of the test PKI.")],
    cert: Annotated[Path, typer.Option(help="Signer's certificate (PEM).")],
    chain: Annotated[list[Path], typer.Option(help="CA certificates to include (PEM).")] = [],
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", help="Where to write the signature; default FILE.p7s.")
    ] = None,
) -> None:
    """Write a detached CMS signature of FILE, as NCALayer would (GOST keys sign with their own hash)."""
    for path, what in [(file, "file"), (key, "key"), (cert, "certificate"), *[(c, "chain certificate") for c in chain]]:
        if not path.is_file():
            fail(f"{what} {path} does not exist")
    written = sign_file(file, key=key, cert=cert, chain=tuple(chain), output=output)
    typer.echo(f"signature written to {written}")
