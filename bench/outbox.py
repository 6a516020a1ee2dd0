"""The outbox dispatcher: how many notices per second reach a local SMTP server (aiosmtpd on loopback).

Queues N release notices (each with its decision.json attachment, rendered from the templates), then
runs dispatcher passes until the outbox is empty, and prints notices/s for the SMTP transport and for
the .eml fallback.

    python bench/outbox.py [-n 2000] [--batch 200] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Counting:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 OK"


def run(n: int, batch: int, database_url: str | None, smtp: bool) -> None:
    from sqlmodel import select

    from customs.core.clock import utcnow
    from customs.core.db import dispose_engines, init_db, transaction
    from customs.core.settings import Settings, configure
    from customs.services.intake import submit_declaration
    from customs.services.outbox import dispatch_due_sync
    from models.declaration import Declaration
    from models.outbox import NoticeKind, queue_notice

    data = Path(tempfile.mkdtemp(prefix="customs-bench-outbox-"))
    controller = None
    values: dict = dict(data_dir=data, database_url=database_url, outbox_batch_size=batch)
    handler = Counting()
    if smtp:
        import socket

        from aiosmtpd.controller import Controller

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        values.update(smtp_host="127.0.0.1", smtp_port=port)
    settings = Settings(**values)
    schema = None
    if database_url and database_url.startswith("postgres"):  # a schema of its own, dropped at the end
        import sqlalchemy

        schema = f"bench_outbox_{uuid.uuid4().hex[:8]}"
        admin = sqlalchemy.create_engine(settings.sqlalchemy_url)
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
        settings = settings.model_copy(update={"database_url": f"{settings.sqlalchemy_url}?options=-csearch_path%3D{schema}"})
    configure(settings)
    init_db(settings)
    try:
        template = json.loads((ROOT / "samples" / "01-green-household-appliances.json").read_text(encoding="utf-8"))
        template["documents"][0]["number"] = f"INV-{uuid.uuid4().hex[:12]}"
        application_id = submit_declaration(json.dumps(template, ensure_ascii=False).encode(), None).application_id
        now = utcnow()
        with transaction() as session:
            declaration = session.exec(select(Declaration).where(Declaration.application_id == application_id)).one()
            for i in range(n):
                queue_notice(
                    session,
                    application_id=application_id,
                    kind=NoticeKind.RELEASE,
                    dedup_key=f"bench:{i}:{uuid.uuid4().hex}",
                    recipient="broker@alatau-import.kz",
                    language=("kk", "ru", "en")[i % 3],
                    facts={
                        "event_at": now.isoformat(),
                        "decision_code": "10",
                        "automatic": True,
                        "decided_by": "system",
                        "decided_at": now.isoformat(),
                        "registration_number": "50101/261126/0000001",
                    },
                    at=now,
                )
            del declaration
        started = time.perf_counter()
        sent = 0
        while True:
            report = dispatch_due_sync()
            sent += report.sent
            if report.claimed == 0:
                break
        elapsed = time.perf_counter() - started
        total = n + 1  # the acceptance notice too
        where = "aiosmtpd on loopback" if smtp else ".eml files"
        print(
            f"{where:<22} {sent}/{total} notices in {elapsed:.2f} s: {sent / elapsed:,.0f} notices/s "
            f"({elapsed / max(sent, 1) * 1000:.2f} ms each, batches of {batch})"
        )
        if smtp:
            assert handler.count == sent == total, (handler.count, sent, total)
        else:
            assert len(list(settings.eml_dir.glob("*.eml"))) == total
    finally:
        if controller is not None:
            controller.stop()
        configure(None)
        dispose_engines()
        if schema is not None:
            with admin.begin() as connection:
                connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--database-url", default=None, help="application database (default: SQLite in a temporary directory)")
    args = parser.parse_args()
    run(args.n, args.batch, args.database_url, smtp=True)
    run(args.n, args.batch, args.database_url, smtp=False)


if __name__ == "__main__":
    main()
