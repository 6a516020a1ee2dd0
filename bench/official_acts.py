"""What proving an official's act costs: drafting, signing (as NCALayer would) and verifying it (chain, CRL, key usage,
the signer bound to the official), per key algorithm. Prints figures; no target is asserted here.

    python bench/official_acts.py [-n 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from customs.core.clock import utcnow
from customs.core.paths import REFERENCE_DIR
from customs.core.reference import load_reference
from customs.core.settings import Settings
from customs.pki.testing import CmsSigner, TestPki
from customs.rules.official_acts import act_bytes, new_act
from customs.services.official_acts import SignedAct, VerifiedAct, verify_act


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="acts per algorithm")
    args = parser.parse_args()
    reference = load_reference(REFERENCE_DIR)
    official = reference.officials["KZ-OF-0001"]
    with tempfile.TemporaryDirectory() as tmp:
        pki = TestPki.create(Path(tmp) / "pki", families=("rsa", "gost2004", "gost2015"))
        settings = Settings(data_dir=Path(tmp) / "data", trust_dir=pki.trust_dir, crl_dir=pki.crl_dir)
        print(f"{'key':<26} {'sign ms':>9} {'verify ms (median)':>19} {'p95':>7} {'acts/s verified':>16}")
        for family in ("rsa", "gost2004", "gost2015"):
            issued = pki.issue_official(official, reference.authority, family=family)
            signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path_of(family),))
            signing, verifying = [], []
            verify_act(SignedAct(b"{}", b"x"), settings=settings, reference=reference)  # load the trust material once
            for i in range(args.n):
                document = act_bytes(
                    new_act(
                        "decide",
                        official_id=official.id,
                        at=utcnow(),
                        subject={"registration_number": f"50101/071226/{i:07d}", "declaration_sha256": "0" * 64},
                        choice={"decision": "release", "decision_code": "10"},
                    )
                )
                started = time.perf_counter()
                signature = signer.sign(document)
                signing.append(time.perf_counter() - started)
                started = time.perf_counter()
                verified = verify_act(SignedAct(document, signature), settings=settings, reference=reference)
                verifying.append(time.perf_counter() - started)
                assert isinstance(verified, VerifiedAct), verified
            verifying.sort()
            p95 = verifying[int(0.95 * (len(verifying) - 1))]
            print(
                f"{verified.signer.algorithm:<26} {statistics.median(signing) * 1000:>9.1f} "
                f"{statistics.median(verifying) * 1000:>19.1f} {p95 * 1000:>7.1f} {1 / statistics.mean(verifying):>16.0f}"
            )


if __name__ == "__main__":
    main()
