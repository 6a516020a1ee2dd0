"""What keeping the project's state on the Prefect server costs (issue 26): a host's periodic check, the readiness
probe of Prefect, and a rebuild after a deployment and an automation were deleted, against Prefect's test server.

    PYTHONPATH=. python bench/prefect_state.py [-n 20]

Prints the median and the slowest of ``n`` checks and probes, and the time of one rebuild (figures, not asserts).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20)
    n = parser.parse_args().n
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from customs.core.db import init_db
    from customs.core.settings import Settings, configure
    from customs.orchestration.automations import CLEARANCE_FAILED
    from customs.orchestration.deployments import apply_project
    from customs.orchestration.server import configured_api_url
    from customs.orchestration.upkeep import PrefectReadiness, keep_project, missing_parts

    with tempfile.TemporaryDirectory() as data, prefect_test_harness(server_startup_timeout=120):
        settings = Settings(data_dir=Path(data), worker_pool=f"bench-{uuid.uuid4().hex[:6]}")
        configure(settings)
        init_db(settings)
        started = time.perf_counter()
        apply_project(settings)
        print(f"apply_project (customs serve's start): {time.perf_counter() - started:.2f} s")
        checks, probes = [], []
        with get_client(sync_client=True) as client:
            for _ in range(n):
                started = time.perf_counter()
                assert missing_parts(client, settings) == []
                checks.append(time.perf_counter() - started)
        api = configured_api_url(settings)
        for _ in range(n):
            probe = PrefectReadiness(api, settings)  # a new one each time: nothing remembered
            started = time.perf_counter()
            assert asyncio.run(probe())["state"] == "up"
            probes.append(time.perf_counter() - started)
        for name, values in (("periodic check (missing_parts)", checks), ("readiness probe of Prefect", probes)):
            print(f"{name}: median {statistics.median(values) * 1000:.1f} ms, slowest {max(values) * 1000:.1f} ms ({n} runs)")
        with get_client(sync_client=True) as client:
            client.delete_deployment(client.read_deployment_by_name("outbox-dispatch/outbox-dispatch").id)
            for found in client.read_automations_by_name(CLEARANCE_FAILED):
                client.delete_automation(found.id)
        started = time.perf_counter()
        done = keep_project(settings, noticed_by="bench")
        print(f"rebuild after a deployment and an automation were deleted: {time.perf_counter() - started:.2f} s ({done[0]})")


if __name__ == "__main__":
    main()
