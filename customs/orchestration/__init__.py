"""Prefect plumbing: the local Prefect server, the deployments of prefect.yaml, the worker that executes
their runs, starting and resuming clearance runs, the print deadline timers, and what Prefect knows that
operations staff need (failed runs)."""
