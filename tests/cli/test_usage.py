"""Issue 31: the command line as a newcomer meets it: no warnings, a quick `--help` that imports nothing heavy,
help in plain metavars, usage errors in one line in the command line's own terms, "did you mean", and what a
long command waits for."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import time

from typer._click import Context
from typer.main import get_command
from typer.testing import CliRunner

from customs.cli import app
from customs.cli.progress import bar, waiting
from customs.cli.root import COMMANDS, ExitCode
from tests.helpers import ROOT

HEAVY = ("prefect", "pyhanko", "weasyprint", "sqlalchemy", "sqlmodel", "alembic", "customs.core.db", "uvicorn")


def customs(*args: str, env: dict | None = None, script: str = "") -> subprocess.CompletedProcess:
    """``customs ARGS`` in a process of its own (the entry point of pyproject.toml: customs.cli:app); ``script``
    runs after it, in the same process."""
    code = "\n".join(
        ["import sys", "from customs.cli import app", "try:", f"    app({list(args)!r}, prog_name='customs')"]
        + ["except SystemExit:", "    pass", script]
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTOMS_", "PYTHONWARNINGS"))}
    environment.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=ROOT, timeout=120)


def test_no_warning_on_help_nor_on_a_command_that_verifies_signatures(tmp_path, pki):
    """pyHanko's import warned that DSA is deprecated (CryptographyDeprecationWarning) on every command."""
    assert "Warning" not in customs("--help").stderr
    env = {"CUSTOMS_DATA_DIR": str(tmp_path / "data")}
    status = customs("status", "A000000-NOTHING", env=env)  # imports the verifier (pyHanko) and the database
    assert "no declaration" in status.stderr and "Warning" not in status.stderr, status.stderr
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin="050840001233", label="usage-sign")
    (tmp_path / "x.json").write_text("{}")
    signed = customs("sign", str(tmp_path / "x.json"), "--key", str(issued.key_path), "--cert", str(issued.cert_path))
    assert "signature written" in signed.stdout and signed.stderr == "", signed.stderr


def test_help_imports_no_command_module_nor_anything_heavy():
    listed = customs("--help", script=f"print('LOADED', *[m for m in {HEAVY!r} if m in sys.modules])")
    assert "submit" in listed.stdout and "demo" in listed.stdout
    assert listed.stdout.splitlines()[-1] == "LOADED", listed.stdout.splitlines()[-1]
    child = customs("--help", script="print('CLI', *sorted(m for m in sys.modules if m.startswith('customs.cli.')))")
    assert child.stdout.splitlines()[-1] == "CLI customs.cli.root customs.cli.usage", child.stdout.splitlines()[-1]


def every_command(group, path):
    ctx = Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield [*path, name], command
        if hasattr(command, "list_commands"):
            yield from every_command(command, [*path, name])


def test_every_help_is_in_plain_metavars():
    runner = CliRunner()
    pages = {"": runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout}
    for path, _ in every_command(get_command(app), []):
        pages[" ".join(path)] = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).stdout
    assert len(pages) > 40
    for name, page in pages.items():
        usage = next(line for line in page.splitlines() if "Usage:" in line)
        assert "{" not in usage and "<" not in usage, (name, usage)
        for typed in ("<bool>", "<list[", "<str>", "<path>", "<int>", "<Path"):
            assert typed not in page, (name, typed)
        json_line = next((line for line in page.splitlines() if "│ --json" in line), None)
        assert json_line is None or re.search(r"--json\s+Print JSON", json_line), (name, json_line)
    decide = pages["decide"]
    assert "decide [OPTIONS] KEY DECISION" in decide
    assert re.search(r"DECISION\s+\[release\|refuse\]", decide) and re.search(r"--code\s+\[10\|11\|12\]", decide)
    assert re.search(r"--grounds\s+TEXT", decide) and re.search(r"--key\s+PATH", decide)
    assert re.search(r"--help\s+Show this", pages[""])


def test_the_listing_says_what_each_command_says_of_itself():
    """`customs --help` lists the commands from COMMANDS without importing them: the same words as their help."""
    root = get_command(app)
    ctx = Context(root)
    for name, entry in COMMANDS.items():
        command = root.get_command(ctx, name)
        first = inspect.cleandoc(command.help or "").split("\n\n")[0].replace("\n", " ").strip()
        assert entry.summary == first, name
    listing = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "400"}).stdout
    assert all(entry.summary[:60] in listing for entry in COMMANDS.values())


def test_usage_errors_are_one_line_in_the_command_lines_terms():
    runner = CliRunner()
    for args, says in (
        (["decide", "A1", "maybe"], "error: DECISION: 'maybe' is not one of release, refuse (see: customs decide --help)"),
        (["decide", "A1", "release", "--code", "13"], "error: --code: '13' is not one of 10, 11, 12"),
        (["worker", "--limit", "many"], "error: --limit: 'many' is not a whole number"),
        (["outbox", "list", "--status", "lost"], "error: --status: 'lost' is not one of pending, sent, failed, undeliverable"),
        (["status"], "error: missing argument KEY (see: customs status --help)"),
        (["status", "A1", "--bogus"], "error: no option: --bogus"),
        (["sttaus", "A1"], "error: no command 'sttaus'; did you mean status? (see: customs --help)"),
        (["submitt"], "did you mean submit?"),
    ):
        result = runner.invoke(app, args, prog_name="customs")
        assert result.exit_code == ExitCode.USAGE, (args, result.output)
        assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert "Value error" not in result.stderr and "Input should" not in result.stderr and "╭" not in result.stderr
    as_json = runner.invoke(app, ["decide", "A1", "maybe", "--json"])
    assert as_json.exit_code == 2 and json.loads(as_json.stdout) == {
        "error": {"code": "USAGE", "path": "DECISION", "message": "DECISION: 'maybe' is not one of release, refuse"}
    }
    assert runner.invoke(app, ["pki"]).exit_code == 2  # a group with no command: its help, as before


def test_a_slow_step_says_what_it_waits_for_and_for_how_long():
    lines: list[str] = []
    with waiting("waiting for the Prefect server to answer", echo=lines.append, every=0.2, grace=0) as step:
        time.sleep(1.3)
        step.note("putting the deployments on the Prefect server")
        time.sleep(0.6)
    assert lines[0] == "waiting for the Prefect server to answer…"
    assert any(re.fullmatch(r"waiting for the Prefect server to answer… \d+ s", line) for line in lines[1:-1]), lines
    assert "putting the deployments on the Prefect server… 1 s" in lines
    assert re.fullmatch(r"putting the deployments on the Prefect server… done in 1\.\d s", lines[-1]), lines
    failed: list[str] = []
    try:
        with waiting("starting", echo=failed.append, grace=0):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert failed[-1].startswith("starting… failed in ")
    quick: list[str] = []
    with waiting("loading Prefect", echo=quick.append):  # over within the grace second: nothing said
        pass
    assert quick == []
    assert bar(0, 8) == "[------------------------] 0/8" and bar(3, 8) == "[#########---------------] 3/8"
    assert bar(8, 8) == "[########################] 8/8"
