"""Issue 31: after `make run`, what a newcomer tries next, as the README's quick start says it: a declaration
signed with a key of the demo's test PKI (`customs pki issue data/demo-pki`, `customs sign`) and submitted from
another shell (`customs submit`). Without CUSTOMS_TRUST_DIR it is refused (a back office never trusts a test PKI
because it lies under its data directory), and the command says which settings trust it; with them set as the
README says, it is released."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from customs.cli import app
from customs.core.settings import configure
from tests.helpers import DECLARANT_BIN, as_bytes, fresh_deployments, sample, unique

pytestmark = pytest.mark.usefixtures("prefect_harness")


def issue_and_sign(runner: CliRunner, demo_pki, tmp_path, name: str):
    """`customs pki issue data/demo-pki ...` then `customs sign` (with the issuing CA in the signature, as
    NCALayer does): the declaration and its .p7s beside it."""
    issued = runner.invoke(app, ["pki", "issue", str(demo_pki), "--name", "ТОО «Алатау Импорт»", "--bin", DECLARANT_BIN])
    assert issued.exit_code == 0, issued.output
    paths = dict(line.split(":", 1) for line in issued.stdout.splitlines() if ":" in line)
    key, cert, chain = (paths[k].strip() for k in ("key", "certificate", "chain"))
    declaration = tmp_path / name
    declaration.write_bytes(as_bytes(unique(sample())))
    signed = runner.invoke(app, ["sign", str(declaration), "--key", key, "--cert", cert, "--chain", chain])
    assert signed.exit_code == 0, signed.output
    return declaration


def test_a_declaration_signed_with_the_demos_keys_after_make_run(settings, pki, tmp_path):
    from customs.cli.demo import create_demo_pki

    fresh = settings.model_copy(update={"trust_dir": None, "crl_dir": None})  # a shell with no CUSTOMS_TRUST_DIR
    configure(fresh)
    create_demo_pki(fresh)  # what `make run` leaves in data/demo-pki
    demo = fresh.demo_pki_dir
    fresh_deployments()
    runner = CliRunner()
    declaration = issue_and_sign(runner, demo, tmp_path, "mine.json")

    # `customs submit mine.json`, the signature forgotten: not submitted unsigned, the option named
    forgot = runner.invoke(app, ["submit", str(declaration)])
    assert forgot.exit_code == 2 and f"give --signature {declaration}.p7s" in forgot.stderr, forgot.output

    untrusted = runner.invoke(app, ["submit", str(declaration), "--signature", f"{declaration}.p7s"])
    assert "registration_refused" in untrusted.stdout and "CERT_UNTRUSTED" in untrusted.stdout, untrusted.output
    assert "no CA certificate is trusted at all" in untrusted.stdout
    assert "hint: CUSTOMS_TRUST_DIR is not set" in untrusted.stderr
    assert f"export CUSTOMS_TRUST_DIR={demo / 'trust'} CUSTOMS_CRL_DIR={demo / 'crl'}" in untrusted.stderr

    # Another PKI trusted (production's, here the tests'): the CA missing is named, the demo's PKI pointed at
    configure(fresh.model_copy(update={"trust_dir": pki.trust_dir, "crl_dir": pki.crl_dir}))
    elsewhere = issue_and_sign(runner, demo, tmp_path, "other.json")
    other = runner.invoke(app, ["submit", str(elsewhere), "--signature", f"{elsewhere}.p7s"])
    assert "CERT_UNTRUSTED" in other.stdout, other.output
    assert (
        "the chain reaches 'CN=ҰКО TEST (RSA) CUSTOMS,C=KZ', whose issuer 'CN=НЕГІЗГІ КО TEST (RSA) CUSTOMS,C=KZ'" in other.stdout
    )
    assert "no issuer matching" not in other.stdout  # pyhanko-certvalidator's account, which named another CA
    assert f"the signer's CA is the demo's test PKI ({demo / 'trust'})" in other.stderr, other.stderr

    # As the README says: the demo's PKI trusted in that shell; a new declaration (the refused one keeps its refusal)
    configure(fresh.model_copy(update={"trust_dir": demo / "trust", "crl_dir": demo / "crl"}))
    again = issue_and_sign(runner, demo, tmp_path, "again.json")
    released = runner.invoke(app, ["submit", str(again), "--signature", f"{again}.p7s"])
    assert released.exit_code == 0 and "status:               released" in released.stdout, released.output
    assert "hint:" not in released.stderr
