"""Orchestration only: what runs after what, waits, deadlines, human decisions.

Every process that runs these flows (a worker, the CLI, a background clearance) masks private persons' data in the
runs' logs before Prefect stores them (customs.rules.privacy, issue 23)."""

from customs.rules.privacy import mask_run_logs

mask_run_logs()
