"""The root of ``customs``: the app, which loads each command's module only when that command runs, and
what commands share.

Every module of customs.cli that holds commands defines ``commands = typer.Typer()`` and imports what
its commands need at the top. ``COMMANDS`` names the module, the help panel and the one-line summary of each
command and command group, so `customs status` imports the database layer only, only the commands that talk to
Prefect import it (about two seconds of start-up that `customs status` or `customs marks` would otherwise pay),
and `customs --help` imports no command's module at all (0.3 s instead of 2.3: bench/cli_start.py). This module
itself imports nothing heavy: the database, Prefect and pyHanko are for the commands.

Every command ends with one of the ``ExitCode``s, and every error printed as JSON is
``{"error": {"code", "path", "message"}}``.
"""

from __future__ import annotations

import difflib
import importlib
import json
import sys
from collections.abc import Iterable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_group

from customs.cli.usage import errors, plain_help, plain_param, usage_message
from customs.core.files import private_umask

if TYPE_CHECKING:
    from typer._click import Command, Context, HelpFormatter

    from customs.rules import Refused


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


class Entry(NamedTuple):
    """A command (or command group) of the root: the module of customs.cli that defines it, its panel in
    `customs --help`, and the line `customs --help` shows for it: the first paragraph of its help, kept here so
    that listing the commands imports none of their modules (tests/cli/test_usage.py checks they agree)."""

    module: str
    panel: str
    summary: str


# Command (or command group) -> its Entry, in the order `customs --help` lists them.
COMMANDS = {
    "submit": Entry(
        "declarations",
        DECLARATIONS,
        "Accept a declaration, fix its submission time and start its clearance. A paper declaration is "
        "entered by an official's act signed with their own NCA key (--official with --key and --cert, or "
        "--act and --act-signature).",
    ),
    "status": Entry(
        "status", DECLARATIONS, "Status of a declaration, its SHA-256, its signers and the history of its transitions."
    ),
    "clear": Entry(
        "declarations",
        DECLARATIONS,
        "Run (or re-run) a declaration's clearance, as a new run of the clearance deployment, to its next "
        "resting state (finished steps are not repeated; a declaration waiting for an official leaves its run"
        " Suspended).",
    ),
    "rerun": Entry(
        "declarations",
        DECLARATIONS,
        "Start the clearance again, as a new flow run, from the step where it failed (steps already done are "
        "never redone), by an official's act signed with their own NCA key (rerun): the audit chain names the"
        " act.",
    ),
    "schema": Entry("status", DECLARATIONS, "Print the JSON Schema of the declaration document (generated from the models)."),
    "verify-document": Entry(
        "documents",
        DECLARATIONS,
        "Check that a document is signed by the authority's service certificate (chain, CRL, key usage, "
        "algorithm) and whether what it states still holds in the database. Exit 0 genuine, 1 not genuine, 3 "
        "input that cannot be checked.",
    ),
    "decide": Entry(
        "officials",
        OFFICIALS,
        "Release or refuse to release a declaration awaiting an official: an act signed with the official's "
        "own NCA key (--key/--cert here, or --act/--signature signed elsewhere); the waiting flow run is "
        "woken and reads it.",
    ),
    "cancel-release": Entry(
        "officials",
        OFFICIALS,
        "Cancel a release (automatic or by an official), a signed act, and send the cancellation document.",
    ),
    "marks": Entry("officials", OFFICIALS, "Release marks still to affix after automatic releases, oldest first."),
    "mark": Entry(
        "officials", OFFICIALS, "Affix the release mark after an automatic release (an official of the zone, a signed act)."
    ),
    "deadlines": Entry(
        "officials",
        OFFICIALS,
        "Check release deadlines now: alert supervisors at 75%, record breaches (the deadline watch does this every minute).",
    ),
    "act": Entry("signing", OFFICIALS, "Officials' acts: the documents an official signs."),
    "print-request": Entry(
        "printing",
        PAPER_COPIES,
        "Record the applicant's request for a paper copy, queued at the office, due in 30 minutes; then its copy is rendered.",
    ),
    "print-queue": Entry("printing", PAPER_COPIES, "Pending print requests, most urgent first, with the minutes left."),
    "print-copy": Entry("printing", PAPER_COPIES, "Write the rendered copy (PDF) of a print request, to print it."),
    "printed": Entry(
        "printing",
        PAPER_COPIES,
        "Record that the copy was printed and handed over (after the 30 minutes it is recorded as late), by "
        "the act of an official of the office signed with their own NCA key (mark_printed).",
    ),
    "sla": Entry(
        "printing",
        PAPER_COPIES,
        "Paper copies per office: requests, printed in time, late, open, median and 95th-percentile minutes to print.",
    ),
    "outbox": Entry("outbox", OUTBOX, "Notices to declarants and the support service (the e-mail outbox)."),
    "ops": Entry(
        "operations",
        OPERATIONS,
        "Operations summary: declarations by status, waiting for officials with their deadlines, open release marks, the outbox.",
    ),
    "recheck": Entry(
        "operations",
        OPERATIONS,
        "What batch-recheck does, now: stuck declarations, passed release deadlines, signers revoked since (current CRLs).",
    ),
    "audit": Entry("audit", OPERATIONS, "The append-only, hash-chained audit trail (one chain per customs office)."),
    "backup": Entry(
        "backup", OPERATIONS, "Backups of the database with the audit anchors and their key (docs/how-to/backup-and-restore.md)."
    ),
    "clients": Entry("clients", OPERATIONS, "Clients of the intake HTTP API and their bearer tokens."),
    "crl": Entry("crl", OPERATIONS, "Certificate revocation lists of the trusted CAs."),
    "serve": Entry(
        "server",
        OPERATIONS,
        "Run it all: the Prefect server (or PREFECT_API_URL), the deployments of prefect.yaml, the worker, the intake API.",
    ),
    "server": Entry("server", OPERATIONS, "The local Prefect server that records flow runs."),
    "deploy": Entry(
        "server", OPERATIONS, "Put the work pool, the deployments and the automations on a Prefect server run apart."
    ),
    "worker": Entry(
        "server",
        OPERATIONS,
        "A clearance worker in this process: the work pool's flow runs, in threads, until Ctrl-C or SIGTERM.",
    ),
    "pki": Entry("pki", TEST_TOOLS, "A test PKI shaped like NCA RK's (for tests, the demo and integration testing)."),
    "sign": Entry(
        "pki", TEST_TOOLS, "Write a detached CMS signature of FILE, as NCALayer would (GOST keys sign with their own hash)."
    ),
    "demo": Entry(
        "demo",
        TEST_TOOLS,
        "The main job on the embedded default: sign the bundled samples with a fresh test PKI and clear them end to end.",
    ),
}


def unavailable(exc: BaseException) -> str | None:
    """What does not answer, when ``exc`` says a service the command needs is unreachable (else ``None``).

    The database's, Prefect's and httpx's exceptions are looked up only when their modules are loaded already: a
    command that never imported them cannot have raised them (and `customs --help` does not pay for importing them)."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(exc, (sqlalchemy_exc.OperationalError, sqlalchemy_exc.InterfaceError)):
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
    """The root group: a command's module is imported when the command is looked up (listing them in
    `customs --help` imports none: each is shown by its ``Entry``); each command is shown in its panel of
    `customs --help` with plain metavars (customs.cli.usage); a mistyped command gets "did you mean"; a usage
    error is one line (or the JSON error with ``--json``); a service that does not answer ends any command with
    exit code 5."""

    listing = False  # True while `customs --help` lists the commands

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        if self.listing:  # only its name, panel and line are shown: no need to import its module
            command = TyperCommand(cmd_name, help=entry.summary)
        else:
            module = importlib.import_module(f"customs.cli.{entry.module}")
            command = get_group(module.commands).get_command(ctx, cmd_name)
            if command is None:
                return None
            plain_help(command)
        command.rich_help_panel = entry.panel  # type: ignore[attr-defined]
        return command

    def get_help_option(self, ctx: Context) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            plain_param(option)
        return option

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        """Without rich: the same panels, as sections."""
        panels: dict[str, list[tuple[str, str]]] = {}
        for name, entry in COMMANDS.items():
            panels.setdefault(entry.panel, []).append((name, entry.summary))
        for panel, rows in panels.items():
            with formatter.section(panel):
                formatter.write_dl(rows)

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        if args and args[0] not in COMMANDS and not args[0].startswith("-") and not ctx.resilient_parsing:
            close = difflib.get_close_matches(args[0], list(COMMANDS), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise errors.UsageError(f"no command {args[0]!r}{hint}", ctx)
        return super().resolve_command(ctx, args)

    def make_context(self, info_name: str | None, args: list[str], parent: Context | None = None, **extra: Any):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except errors.UsageError as exc:
            usage_failed(exc, as_json="--json" in args)

    def invoke(self, ctx: Context) -> Any:
        as_json = "--json" in [*getattr(ctx, "_protected_args", ()), *ctx.args]
        try:
            return super().invoke(ctx)
        except errors.UsageError as exc:
            usage_failed(exc, as_json=as_json)
        except Exception as exc:
            message = unavailable(exc)
            if message is None:
                raise
            fail(message, ExitCode.UNAVAILABLE, as_json=as_json, code="SERVICE_UNAVAILABLE")


def usage_failed(exc: errors.UsageError, *, as_json: bool) -> NoReturn:
    """A usage error in one line, with where to read the command's help (``customs X --help``); with
    ``--json``, the JSON error (code USAGE, the path the option or argument). Asking for the help with no
    arguments (``no_args_is_help``) is not an error to rephrase."""
    if isinstance(exc, errors.NoArgsIsHelpError):
        raise exc
    where, message = usage_message(exc)
    command = exc.ctx.command_path if exc.ctx is not None else "customs"
    if not as_json:
        message = f"{message} (see: {command} --help)"
    fail(message, ExitCode.USAGE, as_json=as_json, code="USAGE", path=where)


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
    from customs.core.db import init_db

    init_db()


def echo_json(value: Any, *, indent: int | None = None) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=indent, default=str))


def outcome(application_id: str, created: bool | None = None) -> dict:
    from customs.services.queries import declaration_status

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
    if result.get("reasons"):
        from customs.cli.hints import trust_hint
        from customs.core.settings import get_settings

        hint = trust_hint(result["reasons"], get_settings())
        if hint:
            typer.secho(f"hint: {hint}", fg=typer.colors.YELLOW, err=True)
