"""``customs``: the command line of the clearance back office; one module per command group (see
customs.cli.root.COMMANDS)."""

from customs.cli.root import app

__all__ = ["app"]
