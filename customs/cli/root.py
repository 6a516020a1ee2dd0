"""The root of ``customs``: the app, which loads each command's module only when that command runs, and
what commands share.

Every module of customs.cli that holds commands defines ``commands = typer.Typer()`` and imports what
its commands need at the top. ``COMMANDS`` names the module (and the help panel) of each command and command
group, so `customs status` imports the database layer only, and only the commands that talk to Prefect import
it (about two seconds of start-up that `customs status` or `customs marks` would otherwise pay).

Every command ends with one of the ``ExitCode``s, and every error printed as JSON is
``{"error": {"code", "path", "message"}}``.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import sqlalchemy.exc
import typer
from typer.core import TyperGroup
from typer.main import get_group

from customs.core.db import init_db
from customs.core.files import private_umask
from customs.rules import Refused
from customs.services.queries import declaration_status


class ExitCode(IntEnum):
    """How every ``customs`` command ends (docs/reference/cli-conventions.md)."""

    OK = 0
    PROBLEM = 1  # a check ran and found a problem (audit verify: a broken chain; crl refresh: a CRL refused)
    USAGE = 2  # the command line is wrong: click's own checks, and what a command checks before it does anything
    REFUSED = 3  # the rules refused the input or the act (a declaration, a decision, a client...); nothing changed
    NOT_FOUND = 4  # no such declaration, print request, notice or API client
    UNAVAILABLE = 5  # a service it needs does not answer: the database, the Prefect API, the SMTP server


# Refusals that say something does not exist: exit 4, like DeclarationNotFound.
NOT_FOUND_CODES = frozenset({"REQUEST_UNKNOWN"})

DECLARATIONS = "Declarations"
OFFICIALS = "Officials"
PAPER_COPIES = "Paper copies"
OUTBOX = "Outbox"
OPERATIONS = "Operations"
TEST_TOOLS = "Test PKI and demo"

# Command (or command group) -> the module of customs.cli that defines it and its panel in `customs --help`, in
# the order `customs --help` lists them.
COMMANDS = {
    "submit": ("declarations", DECLARATIONS),
    "status": ("status", DECLARATIONS),
    "clear": ("declarations", DECLARATIONS),
    "rerun": ("declarations", DECLARATIONS),
    "schema": ("status", DECLARATIONS),
    "verify-document": ("documents", DECLARATIONS),
    "decide": ("officials", OFFICIALS),
    "cancel-release": ("officials", OFFICIALS),
    "marks": ("officials", OFFICIALS),
    "mark": ("officials", OFFICIALS),
    "deadlines": ("officials", OFFICIALS),
    "act": ("signing", OFFICIALS),
    "print-request": ("printing", PAPER_COPIES),
    "print-queue": ("printing", PAPER_COPIES),
    "print-copy": ("printing", PAPER_COPIES),
    "printed": ("printing", PAPER_COPIES),
    "sla": ("printing", PAPER_COPIES),
    "outbox": ("outbox", OUTBOX),
    "ops": ("operations", OPERATIONS),
    "recheck": ("operations", OPERATIONS),
    "audit": ("audit", OPERATIONS),
    "backup": ("backup", OPERATIONS),
    "clients": ("clients", OPERATIONS),
    "crl": ("crl", OPERATIONS),
    "serve": ("server", OPERATIONS),
    "server": ("server", OPERATIONS),
    "deploy": ("server", OPERATIONS),
    "worker": ("server", OPERATIONS),
    "pki": ("pki", TEST_TOOLS),
    "sign": ("pki", TEST_TOOLS),
    "demo": ("demo", TEST_TOOLS),
}


def unavailable(exc: BaseException) -> str | None:
    """What does not answer, when ``exc`` says a service the command needs is unreachable (else ``None``).

    Prefect's and httpx's exceptions are looked up only when their modules are loaded already: a command that
    never imported them cannot have raised them (and `customs status` does not pay for importing them)."""
    if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"the database does not answer: {detail[0] if detail else type(exc).__name__}"
    server = sys.modules.get("customs.orchestration.server")
    if server is not None and isinstance(exc, server.PrefectServerError):
        return f"the Prefect server is unavailable: {exc}"
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        try:  # the Prefect API, as a rule
            where = f"{exc.request.url.scheme}://{exc.request.url.netloc.decode()}"
        except RuntimeError:  # no request attached
            where = "a server this command needs"
        return f"{where} does not answer: {exc}"
    return None


class LazyCommands(TyperGroup):
    """The root group: a command's module is imported when the command is looked up; each command is shown in
    its panel of `customs --help`; a service that does not answer ends any command with exit code 5."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, panel = COMMANDS[cmd_name]
        command = get_group(importlib.import_module(f"customs.cli.{module}").commands).get_command(ctx, cmd_name)
        if command is not None:
            command.rich_help_panel = panel  # type: ignore[attr-defined]
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Without rich: the same panels, as sections."""
        panels: dict[str, list[tuple[str, str]]] = {}
        for name, (_, panel) in COMMANDS.items():
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                panels.setdefault(panel, []).append((name, command.get_short_help_str(formatter.width - 30)))
        for panel, rows in panels.items():
            with formatter.section(panel):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        as_json = "--json" in [*getattr(ctx, "_protected_args", ()), *ctx.args]
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = unavailable(exc)
            if message is None:
                raise
            fail(message, ExitCode.UNAVAILABLE, as_json=as_json, code="SERVICE_UNAVAILABLE")


app = typer.Typer(cls=LazyCommands, no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """Customs clearance back office (Kazakhstan state revenue bodies).

    Exit codes: 0 done, 1 a problem found (a broken audit chain, a refused CRL...), 2 usage, 3 refused by the
    rules, 4 not found, 5 a service unavailable (database, Prefect, SMTP)."""
    private_umask()  # what any command creates (databases, logs, keys, the Prefect server's files): its user's only


# Shared options: one name and one help per role and per flag.
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help='Print JSON instead of text; an error is then {"error": {"code", "path", "message"}} on stdout.',
    ),
]


def fail(
    message: str,
    exit_code: ExitCode = ExitCode.USAGE,
    *,
    as_json: bool = False,
    code: str | None = None,
    path: str = "$",
    error: dict | None = None,
) -> NoReturn:
    """Stop with ``message`` on stderr (or ``{"error": {code, path, message}}`` on stdout with ``--json``)."""
    if as_json:
        error = error or {"code": code or exit_code.name, "path": path, "message": message}
        typer.echo(json.dumps({"error": error}, ensure_ascii=False))
    else:
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(int(exit_code))


def refused(exc: Refused, as_json: bool) -> NoReturn:
    """A refusal of the rules, as the official or operator who asked reads it: exit 3 (4 for an unknown request)."""
    exit_code = ExitCode.NOT_FOUND if exc.code in NOT_FOUND_CODES else ExitCode.REFUSED
    fail(f"{exc.message} [{exc.code}]", exit_code, as_json=as_json, error=exc.as_dict())


def not_found(exc: LookupError, as_json: bool, *, code: str = "DECLARATION_NOT_FOUND", path: str = "key") -> NoReturn:
    """Nothing by that key (a declaration, by default): exit 4, the same code and path as the API's 404."""
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    fail(message, ExitCode.NOT_FOUND, as_json=as_json, code=code, path=path)


def read_file(path: Path, what: str, *, as_json: bool = False) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror}", as_json=as_json, path=what)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, indent: str = "", empty: str | None = None) -> None:
    """Rows under a header row, each column as wide as its widest cell (numbers right-aligned, nothing as -);
    ``empty`` is printed instead when there are no rows."""
    rows = [list(row) for row in rows]
    cells = [["-" if v is None or v == "" else str(v) for v in row] for row in rows]
    if not cells:
        if empty is not None:
            typer.echo(f"{indent}{empty}")
        return
    numeric = [
        bool(values) and all(isinstance(v, (int, float)) for v in values)
        for values in ([row[i] for row in rows if row[i] is not None] for i in range(len(columns)))
    ]
    widths = [max(len(columns[i]), *(len(row[i]) for row in cells)) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric, strict=True)]
        return (indent + "  ".join(parts)).rstrip()

    typer.echo(line(columns))
    for row in cells:
        typer.echo(line(row))


def prepare_database() -> None:
    init_db()


def echo_json(value: Any, *, indent: int | None = None) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=indent, default=str))


def outcome(application_id: str, created: bool | None = None) -> dict:
    status = declaration_status(application_id)
    keys = (
        "application_id",
        "status",
        "submitted_at",
        "submitted_at_kz",
        "registration_number",
        "lane",
        "risk_profiles",
        "decision_code",
        "reasons",
    )
    result = {k: status[k] for k in keys}
    if created is not None:
        result["created"] = created
    return result


def print_outcome(result: dict) -> None:
    again = "" if result.get("created", True) else "  (these bytes were submitted before: existing application)"
    typer.echo(f"application id:       {result['application_id']}{again}")
    typer.echo(f"submitted at:         {result['submitted_at_kz']}")
    typer.echo(f"status:               {result['status']}")
    if result.get("registration_number"):
        typer.echo(f"registration number:  {result['registration_number']}")
    if result.get("lane"):
        profiles = ", ".join(result.get("risk_profiles") or []) or "none"
        typer.echo(f"lane:                 {result['lane']} (risk profiles: {profiles})")
    if result.get("decision_code"):
        typer.echo(f"decision:             {result['decision_code']}")
    for reason in result.get("reasons") or []:
        typer.echo(f"  - {reason['code']} at {reason['path']}: {reason['message']}")
