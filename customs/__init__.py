"""Customs clearance back office for Kazakhstan's state revenue authorities.

The code is in layers; each imports only the ones below it (checked by import-linter, see
pyproject.toml):

    customs.cli         the ``customs`` command line; ``customs serve`` composes the service
    customs.api         the intake HTTP API (FastAPI): one router per resource, auth, schemas, errors
    customs.orchestration  Prefect plumbing: the worker, starting and resuming runs, the local server
    flows               Prefect flows: what runs after what, waits, deadlines, decisions
    tasks               Prefect tasks: thin wrappers (retries, timeouts, logging) over the use cases
    customs.services    use cases, one transaction each, no Prefect
    customs.pki | customs.notices  signatures and CRLs | rendering and sending documents
    customs.rules       the rules as plain functions of data: no Prefect, no database
    customs.core        settings, time, reference data, database engine and sessions
    models              the data: tables, the document schema, statuses and transitions, reasons
"""

import os

# No internet here, and a customs back office phones home to nobody: Prefect's server analytics stay off
# unless explicitly switched on (set before anything imports Prefect).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
