"""``customs``: the command line of the clearance back office; one module per command group."""

from customs.cli import (  # noqa: F401  (each module registers its commands with the root app)
    audit,
    clients,
    crl,
    declarations,
    demo,
    officials,
    operations,
    outbox,
    pki,
    printing,
    server,
)
from customs.cli.root import app

__all__ = ["app"]
