"""The main job on the embedded default: the bundled sample declarations, signed with a fresh test PKI,
cleared end to end through the Prefect server: one run of the clearance deployment each, executed by a worker
(the demo's own, in this process, unless one serves the pool already); the declarations that wait for an official
are left Suspended for `customs decide`."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from customs.cli.progress import bar, waiting
from customs.core.files import tighten_data_dir
from customs.core.paths import SAMPLES_DIR
from customs.core.settings import Settings, configure, get_settings

with waiting("loading Prefect, the clearance flow and the database layer", done="loaded"):
    # seconds on a busy machine: said, not silent (the first line `make run` prints)
    from customs.core.db import init_db
    from customs.core.reference import load_reference
    from customs.orchestration.server import ensure_server, login_hint, stop_server, ui_url
    from customs.orchestration.starting import Launcher
    from customs.pki.testing import CmsSigner, TestPki
    from customs.services.intake import IncomingAttachment, submit_declaration
    from customs.services.outbox import list_notices
    from customs.services.queries import declaration_status

commands = typer.Typer()  # registered with the root app by customs.cli.root.COMMANDS


def demo_settings(base: Settings) -> Settings:
    """The demo trusts its own fresh test PKI unless trust and CRL directories were configured."""
    if base.trust_dir and base.crl_dir:
        return base
    return base.model_copy(update={"trust_dir": base.demo_pki_dir / "trust", "crl_dir": base.demo_pki_dir / "crl"})


def create_demo_pki(settings: Settings) -> TestPki:
    """The demo's test PKI, made afresh under data_dir/demo-pki: RSA, GOST 2004 and GOST 2015 CAs and their CRLs."""
    shutil.rmtree(settings.demo_pki_dir, ignore_errors=True)
    return TestPki.create(settings.demo_pki_dir, families=("rsa", "gost2004", "gost2015"))


def run_demo(*, keep_server: bool = True, samples_dir: Path = SAMPLES_DIR) -> list[dict]:
    settings = demo_settings(get_settings())
    configure(settings)
    tighten_data_dir(settings.data_dir)
    typer.echo(f"data directory: {settings.data_dir}")
    init_db(settings)
    typer.echo(f"database:       {settings.sqlalchemy_url}")

    if settings.trust_dir == settings.demo_pki_dir / "trust":
        pki = create_demo_pki(settings)
        typer.echo(f"test PKI:       {settings.demo_pki_dir} (fresh RSA, GOST 2004 and GOST 2015 CAs and their CRLs)")
    else:
        pki = None
        typer.echo(f"trust:          {settings.trust_dir}, CRLs {settings.crl_dir}")
    if pki is not None and settings.authority_cert is None:
        # the authority's service certificate (RSA: the paper copies get a PAdES signature inside the PDF)
        authority = load_reference(settings.reference_dir).authority
        issued = pki.issue_authority(bin=authority.bin, organization=authority.name, label="authority")
        settings = settings.model_copy(
            update={
                "authority_cert": issued.cert_path,
                "authority_key": issued.key_path,
                "authority_chain": pki.issuing_cert_path,
            }
        )
        configure(settings)
        typer.echo(f"service cert:   {issued.cert_path} (the authority, BIN {authority.bin}: signs decision.json and copies)")

    started = time.monotonic()
    api_url = ensure_server(settings, progress=waiting)
    typer.echo(f"Prefect API:    {api_url} (ready in {time.monotonic() - started:.1f} s)\n")

    manifest = json.loads((samples_dir / "manifest.json").read_text(encoding="utf-8"))
    signers: dict[tuple, CmsSigner] = {}
    results = []
    total = len(manifest["samples"])
    with ExitStack() as stack:
        with waiting("putting the work pool and the deployments on the Prefect server", done="ready", grace=0):
            launcher = stack.enter_context(Launcher(settings))
            served = launcher.served()
        if not served:
            typer.echo(f"worker:         this process's, on work pool {launcher.pool}, while the samples are cleared\n")
        for number, sample in enumerate(manifest["samples"], start=1):
            typer.secho(f"{bar(number - 1, total)} samples cleared; next: {sample['file']}", dim=True)
            content = (samples_dir / sample["file"]).read_bytes()
            who = sample["signer"]
            family = who.get("alg", "rsa")
            key = (who.get("iin"), who.get("bin"), family)
            if pki is None:
                raise SystemExit("the demo signs the samples with its own test PKI; unset CUSTOMS_TRUST_DIR/CUSTOMS_CRL_DIR")
            if key not in signers:
                issued = pki.issue(name=who["name"], iin=who.get("iin"), bin=who.get("bin"), family=family)
                signers[key] = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path_of(family),))
            signer = signers[key]
            attachments = []
            for name in sample["attachments"]:
                data = (samples_dir / "attachments" / name).read_bytes()
                attachments.append(IncomingAttachment(name, data, signer.sign(data)))
            submission = submit_declaration(content, signer.sign(content), attachments, channel="electronic")
            run = launcher.start(submission.application_id)  # the intake's key: a repeated demo finds the same run
            with waiting(f"clearing {sample['file']} (flow run {run.id})", every=15.0, done="rested"):
                launched = launcher.wait(run.id)
            status = declaration_status(submission.application_id)
            status["flow_run"] = {"id": str(launched.flow_run_id), "state": launched.state}
            status["sample"] = sample["file"]
            status["created"] = submission.created
            results.append(status)
            _print_result(status, sample["expect"])
        typer.secho(f"{bar(total, total)} samples cleared in {time.monotonic() - started:.0f} s", dim=True)

    awaiting = [r for r in results if r["status"] == "awaiting_official"]
    keys = _officials_keys(pki, settings) if pki is not None else {}
    if awaiting:
        typer.echo(
            f"\n{len(awaiting)} declarations wait for an official. Their flow runs are Suspended in Prefect (resuming one "
            "there decides nothing); an official decides with an act signed by their own NCA key, e.g. with the demo's "
            "keys, from another shell that trusts the demo's PKI (the resumed run is finished by a worker: customs serve, "
            "or customs worker):"
        )
        if pki is not None:
            typer.echo(f"  {_demo_environment(settings)}")
        for status in awaiting:
            official = _official_for(status)
            signing = keys.get(official, f"--official {official} --key KEY.pem --cert CERT.pem")
            typer.echo(f"  customs decide {status['registration_number']} release --code 10 {signing}")
        typer.echo(
            f"Officials, offices and zones: reference/officials.json; their demo keys: {settings.demo_pki_dir}/signers/"
            "official-*. Release marks to affix: customs marks"
        )

    typer.echo(_anchored(settings))
    sent = [n for n in list_notices(limit=10_000) if any(n["application_id"] == r["application_id"] for r in results)]
    by_status: dict[str, int] = {}
    for notice in sent:
        by_status[notice["status"]] = by_status.get(notice["status"], 0) + 1
    where = f"SMTP {settings.smtp_host}" if settings.smtp_host else f".eml files in {settings.eml_dir}"
    typer.echo(
        f"\nNotices to declarants: {', '.join(f'{v} {k}' for k, v in sorted(by_status.items()))} ({where}); "
        "list: customs outbox list"
    )
    typer.echo(
        f"Flow runs: {ui_url(api_url)}/runs  (one flow run per declaration, named by registration number or application id)"
    )
    typer.echo(f"Prefect UI login: {login_hint(settings)}")
    typer.echo("Status of one declaration: customs status <application id or registration number>")
    if pki is not None:
        typer.echo(
            "Check a letter's decision.json (signed by the authority) from another shell:\n"
            f"  {_demo_environment(settings)}\n"
            f"  customs verify-document {settings.eml_dir}/<notice>-release-<application id>.eml"
        )
    if keep_server:
        typer.echo("The Prefect server keeps running for the UI; stop it with: customs server stop  (or make stop)")
    else:
        stop_server(settings)
    return results


def _demo_environment(settings: Settings) -> str:
    """What another shell sets to act on the demo's declarations: trust the demo's PKI (officials' acts are verified
    against it) and sign as the demo's authority (the documents sent)."""
    return (
        f"export CUSTOMS_DATA_DIR={settings.data_dir} CUSTOMS_TRUST_DIR={settings.trust_dir} "
        f"CUSTOMS_CRL_DIR={settings.crl_dir} CUSTOMS_AUTHORITY_CERT={settings.authority_cert} "
        f"CUSTOMS_AUTHORITY_KEY={settings.authority_key} CUSTOMS_AUTHORITY_CHAIN={settings.authority_chain}"
    )


def _officials_keys(pki: TestPki, settings: Settings) -> dict[str, str]:
    """Every official of the reference data gets an NCA employee certificate of the demo PKI (the inspectors of
    Khorgos and Kyzylorda GOST 34.310-2004 keys, the others RSA), as NCA issues them to the authority's staff; the
    CLI options that sign with each."""
    reference = load_reference(settings.reference_dir)
    options = {}
    for official in reference.officials.values():
        family = "gost2004" if official.office in {"39851", "55201"} else "rsa"
        issued = pki.issue_official(official, reference.authority, family=family, label=f"official-{official.id}")
        options[official.id] = (
            f"--official {official.id} --key {issued.key_path} --cert {issued.cert_path} "
            f"--chain {pki.issuing_cert_path_of(family)}"
        )
    return options


def _official_for(status: dict) -> str:
    officials = load_reference(get_settings().reference_dir).officials.values()
    match = [
        o.id for o in officials if o.office == status["customs_office"] and o.zone == status["zone"] and o.role == "inspector"
    ]
    return match[0] if match else "OFFICIAL_ID"


def _print_result(status: dict, expect: str) -> None:
    note = "" if status["created"] else "  [same bytes as an earlier run: existing application]"
    typer.secho(f"{status['sample']}{note}", bold=True)
    typer.echo(f"  expected:            {expect}")
    typer.echo(f"  application id:      {status['application_id']}   submitted {status['submitted_at_kz']}")
    if status["registration_number"]:
        typer.echo(f"  registration number: {status['registration_number']}")
    lane = (
        f"   lane: {status['lane']}" + (f" ({', '.join(status['risk_profiles'])})" if status["risk_profiles"] else "")
        if status["lane"]
        else ""
    )
    typer.echo(f"  status:              {status['status']}{lane}")
    if status.get("flow_run"):
        typer.echo(f"  flow run:            {status['flow_run']['id']} ({status['flow_run']['state']})")
    for reason in status["reasons"]:
        typer.echo(f"    - {reason['code']} at {reason['path']}: {reason['message']}")


@commands.command()
def demo(
    keep_server: Annotated[bool, typer.Option(help="Leave the Prefect server running so the UI shows the runs.")] = True,
) -> None:
    """The main job on the embedded default: sign the bundled samples with a fresh test PKI and clear them end to end."""
    run_demo(keep_server=keep_server)


def _anchored(settings) -> str:
    """The audit chains anchored now, with the service's anchor key (made on the first run, as `customs serve` does):
    `customs audit verify` after the demo checks the trail against a signed anchor, as anchors are required."""
    from customs.services.audit_anchors import AnchorRefused, ensure_anchor_key, write_anchor

    try:
        key = ensure_anchor_key(settings)
        anchor = write_anchor(settings, only_if_changed=True)
    except AnchorRefused as exc:
        return f"\nAudit trail: NOT anchored: {exc}"
    number = f"anchor {anchor.number}" if anchor is not None else "no new event since the last anchor"
    return f"\nAudit trail: anchored ({number}, key SHA-256 {key.fingerprint[:16]}…); check it: customs audit verify"
