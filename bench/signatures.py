"""Signature verification throughput: a declaration with two signed attachments, with the project's
verifier (pyHanko + pyhanko-certvalidator + cryptography CRL look-up), against the physical limit:
bare RSA-2048 PKCS#1 v1.5 verifies of the same bytes with `cryptography`; then the MB/s of the GOST hashes
(customs/pki/gost, C) over a 20 MiB buffer.

    python bench/signatures.py [--seconds 5] [--gost-only]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from customs.core.clock import utcnow
from customs.pki.testing import CmsSigner, TestPki
from customs.pki.trust import TrustMaterial
from customs.pki.verify import CmsSignatureVerifier, SignedDocument, verify_documents
from models.document import WrittenDeclarant

BIN = "050840001233"


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--gost-only", action="store_true", help="only the GOST hashes' MB/s")
    args = parser.parse_args()
    if args.gost_only:
        print_gost_hash_rates()
        return
    with tempfile.TemporaryDirectory() as tmp:
        pki = TestPki.create(Path(tmp))
        issued = pki.issue(name="ТОО «Алатау Импорт»", bin=BIN)
        signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
        declaration = (Path(__file__).resolve().parent.parent / "samples" / "01-green-household-appliances.json").read_bytes()
        invoice, contract = b"%PDF-1.4 invoice " * 2000, b"%PDF-1.4 contract " * 1000
        documents = [
            SignedDocument(f"doc{i}", name, data, signer.sign(data))
            for i, (name, data) in enumerate(
                [("declaration.json", declaration), ("invoice.pdf", invoice), ("contract.pdf", contract)]
            )
        ]
        verifier = CmsSignatureVerifier(TrustMaterial.load(pki.trust_dir, pki.crl_dir))
        now = utcnow()
        verdicts = verify_documents(verifier, documents, declarant=WrittenDeclarant(bin=BIN), at=now, now=now)
        assert all(v.valid for v in verdicts), [v.reasons for v in verdicts]

        full = rate(
            lambda: verify_documents(verifier, documents, declarant=WrittenDeclarant(bin=BIN), at=now, now=now), args.seconds
        )

        key = serialization.load_pem_private_key(issued.key_path.read_bytes(), None)
        public = key.public_key()
        signatures = [key.sign(d.content, padding.PKCS1v15(), hashes.SHA256()) for d in documents]

        def bare():
            for d, s in zip(documents, signatures, strict=True):
                public.verify(s, d.content, padding.PKCS1v15(), hashes.SHA256())

        physical = rate(bare, args.seconds)
    sizes = ", ".join(f"{d.filename} {len(d.content)} B" for d in documents)
    print(f"documents per declaration: 3 ({sizes})")
    print(f"full verification (CMS + chain + CRL + key usage + signer):  {full:8.1f} declarations/s  ({1000 / full:.2f} ms each)")
    print(
        f"bare RSA-2048 verify of the same bytes (cryptography):       {physical:8.1f} declarations/s  "
        f"({1000 / physical:.3f} ms each)"
    )
    print(f"ratio bare/full: {physical / full:.1f}x")
    print_gost_hash_rates()


if __name__ == "__main__":
    main()
