"""Signature verification throughput: a declaration with two signed attachments, with the project's
verifier (pyHanko + pyhanko-certvalidator + cryptography CRL look-up, with customs/pki/gost for GOST), for RSA and
each GOST family side by side, against bare signature verifications of the same bytes (RSA-2048 PKCS#1 v1.5 with
`cryptography`, GOST with customs/pki/gost); then the MB/s of the GOST hashes (customs/pki/gost, C) and of SHA-256
over a 20 MiB buffer.

    python bench/signatures.py [--seconds 5] [--gost-only]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from customs.core.clock import utcnow
from customs.pki.testing import CmsSigner, TestPki, load_private_key
from customs.pki.trust import TrustMaterial
from customs.pki.verify import CmsSignatureVerifier, SignedDocument, verify_documents
from models.document import WrittenDeclarant

BIN = "050840001233"
SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "01-green-household-appliances.json"
DOCUMENTS = [
    ("declaration.json", SAMPLE.read_bytes()),
    ("invoice.pdf", b"%PDF-1.4 invoice " * 2000),
    ("contract.pdf", b"%PDF-1.4 contract " * 1000),
]


def rate(fn, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def gost_hash_rates(size: int = 20 << 20, repeat: int = 3) -> dict[str, float]:
    """MB/s (10^6 bytes per second) of each GOST hash over one buffer of size bytes, the best of repeat runs."""
    from customs.pki.gost import hashes

    data = bytes(range(256)) * (size // 256)
    rates = {}
    for name in hashes.NAMES:
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            hashes.new(name, data).digest()
            best = min(best, time.perf_counter() - start)
        rates[name] = len(data) / best / 1e6
    return rates


def print_gost_hash_rates() -> None:
    for name, mbps in gost_hash_rates().items():
        print(f"GOST hash {name:<14} over 20 MiB: {mbps:8.1f} MB/s  ({20 * 1.048576 / mbps:.2f} s)")


FAMILIES = ("rsa", "gost2004", "gost2015-256", "gost2015")


def family_rates(pki: TestPki, family: str, seconds: float) -> tuple[float, float]:
    """(declarations/s through the project's verifier, bare signature verifications/s of the same bytes)."""
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin=BIN, family=family)
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path_of(family),))
    documents = [SignedDocument(f"doc{i}", name, data, signer.sign(data)) for i, (name, data) in enumerate(DOCUMENTS)]
    verifier = CmsSignatureVerifier(TrustMaterial.load(pki.trust_dir, pki.crl_dir))
    now = utcnow()
    verdicts = verify_documents(verifier, documents, declarant=WrittenDeclarant(bin=BIN), at=now, now=now)
    assert all(v.valid for v in verdicts), [v.reasons for v in verdicts]
    full = rate(lambda: verify_documents(verifier, documents, declarant=WrittenDeclarant(bin=BIN), at=now, now=now), seconds)
    key = load_private_key(issued.key_path.read_bytes())
    if family == "rsa":
        public = key.public_key()
        signatures = [key.sign(d.content, padding.PKCS1v15(), hashes.SHA256()) for d in documents]

        def bare():
            for d, s in zip(documents, signatures, strict=True):
                public.verify(s, d.content, padding.PKCS1v15(), hashes.SHA256())

    else:
        public = key.public_key()
        signatures = [key.sign(d.content) for d in documents]

        def bare():
            for d, s in zip(documents, signatures, strict=True):
                assert public.verify(d.content, s)

    return full, rate(bare, seconds) * len(documents)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--gost-only", action="store_true", help="only the GOST hashes' MB/s")
    args = parser.parse_args()
    if args.gost_only:
        print_gost_hash_rates()
        return
    sizes = ", ".join(f"{name} {len(data)} B" for name, data in DOCUMENTS)
    print(f"documents per declaration: 3 ({sizes})")
    print(f"{'family':<13} {'full verification (CMS, chain, CRL, key usage, signer)':>58} {'bare signature verifications':>32}")
    with tempfile.TemporaryDirectory() as tmp:
        pki = TestPki.create(Path(tmp), families=FAMILIES)
        for family in FAMILIES:
            full, bare = family_rates(pki, family, args.seconds)
            print(f"{family:<13} {full:>33.1f} declarations/s ({1000 / full:6.2f} ms) {bare:>16.1f} verifications/s")
    print_gost_hash_rates()
    data = bytes(range(256)) * (20 << 12)
    start = time.perf_counter()
    hashlib.sha256(data).digest()
    print(f"for comparison, SHA-256 (hashlib) over 20 MiB: {len(data) / (time.perf_counter() - start) / 1e6:8.1f} MB/s")


if __name__ == "__main__":
    main()
