"""batch-recheck over N stored declarations (default 100,000): stuck ones, passed deadlines, revoked signers.

Seeds the database with declarations in realistic statuses (most released, a fifth waiting for an
official, some stuck), each with a signer whose certificate is checked against the current CRL (which
revokes a few of them), then times one full recheck pass.

    python bench/recheck.py [-n 100000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    from sqlalchemy import insert

    from customs.core.clock import utcnow
    from customs.core.db import get_engine, init_db
    from customs.core.settings import Settings, configure
    from customs.pki.testing import TestPki
    from models.declaration import Declaration, Status
    from tasks.recheck import batch_recheck_run

    data = Path(tempfile.mkdtemp(prefix="customs-bench-recheck-"))
    pki = TestPki.create(data / "pki", now=utcnow() - timedelta(days=1))
    issued = [pki.issue(name=f"Signer {i}", bin="050840001233", label=f"s{i}") for i in range(20)]
    from cryptography import x509

    from customs.pki.certificates import NAME_LABELS

    serials = [format(x509.load_pem_x509_certificate(i.cert_path.read_bytes()).serial_number, "x") for i in issued]
    for serial in serials[:2]:
        pki.revoke(int(serial, 16), at=utcnow() - timedelta(hours=1))
    issuer = pki.issuing_cert.subject.rfc4514_string(NAME_LABELS)
    settings = Settings(data_dir=data, trust_dir=pki.trust_dir, crl_dir=pki.crl_dir, database_url=args.database_url)
    cleanup = None
    if args.database_url and args.database_url.startswith("postgres"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(settings.sqlalchemy_url)
        schema = f"bench_recheck_{uuid.uuid4().hex[:8]}"
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
        settings = settings.model_copy(update={"database_url": f"{settings.sqlalchemy_url}?options=-csearch_path%3D{schema}"})

        def cleanup():
            from customs.core.db import dispose_engines

            dispose_engines()
            with engine.begin() as connection:
                connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))

    configure(settings)
    init_db(settings)

    now = utcnow()
    # 70% released, 20% waiting for an official (1 in 100 of them past the deadline), 10% in progress
    # (1 in 100 of them stuck); signers: 2 of 20 certificates revoked an hour ago.
    statuses = [Status.RELEASED] * 14 + [Status.AWAITING_OFFICIAL] * 4 + [Status.LANE_ASSIGNED, Status.SUBMITTED]
    started = time.perf_counter()
    rows = []
    with get_engine(settings).begin() as connection:
        for i in range(args.n):
            status = statuses[i % len(statuses)]
            content = f'{{"n": {i}}}'.encode()
            late = (i // len(statuses)) % 100 == 0
            submitted = now - (timedelta(hours=6) if late else timedelta(minutes=1 + i % 9))
            rows.append(
                {
                    "application_id": f"B{i:09d}",
                    "channel": "electronic",
                    "submitted_at": submitted,
                    "content": content,
                    "content_sha256": hashlib.sha256(content).hexdigest(),
                    "status": status,
                    "updated_at": submitted,
                    "signature_reasons": [],
                    "reasons": [],
                    "risk_profiles": [],
                    "signers": [
                        {
                            "document": "declaration",
                            "filename": "declaration.json",
                            "signer": {
                                "serial": serials[(i // len(statuses)) % len(serials)],
                                "issuer": issuer,
                                "subject": "Signer",
                                "iin": None,
                                "bin": "050840001233",
                            },
                        }
                    ],
                    "registration_number": None if status == Status.SUBMITTED else f"50101/261126/{i:07d}",
                    "registered_at": None if status == Status.SUBMITTED else submitted,
                    "release_due_at": submitted + timedelta(hours=4) if status == Status.AWAITING_OFFICIAL else None,
                    "customs_office": "50101",
                    "zone": "ALA-TSW",
                }
            )
            if len(rows) == 5000:
                connection.execute(insert(Declaration), rows)
                rows = []
        if rows:
            connection.execute(insert(Declaration), rows)
    print(f"seeded {args.n:,} declarations in {time.perf_counter() - started:.1f} s ({settings.sqlalchemy_url.split(':')[0]})")

    restarted = []
    started = time.perf_counter()
    result = batch_recheck_run(restart=restarted.append, now=now)
    elapsed = time.perf_counter() - started
    print(f"recheck of {result['scanned']:,} not-finished declarations (of {args.n:,}) in {elapsed:.1f} s: {result['counts']}")
    print(f"  {result['scanned'] / elapsed:,.0f} declarations/s; restarted {len(restarted):,}")
    if cleanup is not None:
        cleanup()


if __name__ == "__main__":
    main()
