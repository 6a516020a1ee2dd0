"""The clearance steps: each module holds a rule as plain functions and a thin Prefect task around it."""
