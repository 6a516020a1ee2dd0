"""MkDocs hook: the reference pages generated from the code at build time, never copied by hand.

- ``reference/cli.md``: the ``customs`` command tree (typer's click commands): every command, its help, its
  arguments and options;
- ``reference/settings.md``: the fields of ``customs.core.settings.Settings`` (``CUSTOMS_<FIELD>``, type, default,
  description);
- ``reference/api.md``: the intake API's OpenAPI document (``customs.api.app.create_app().openapi()``): each path
  and method, its summary and description, its responses and error codes;
- ``reference/reason-codes.md``: the message catalogue of reason codes (``locale/<lang>/LC_MESSAGES/reasons.po``,
  read by ``customs.notices.catalogue``) in kk, ru and en;
- ``reference/deployments.md``: the work pool, its queues and the deployments of ``prefect.yaml``;
- ``img/*.png``: the screenshots of ``bench/screenshots/``, served as they are.

The pages are added to MkDocs' files in ``on_files`` (``File.generated``): nothing is written into ``docs/``.
A field without a description, or a command without help, fails the build (the reference would be silent).
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
GENERATED_NOTE = "<!-- generated at build time by docs/hooks/reference.py: edit the code, not this page -->\n\n"


class ReferenceError(RuntimeError):
    pass


def _project_on_path() -> None:
    """Import this checkout's packages (not another checkout the venv may have installed)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for name in [m for m in sys.modules if m.split(".")[0] in {"customs", "models", "tasks", "flows"}]:
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if module_file and not module_file.startswith(str(ROOT)):
            del sys.modules[name]


def prose(text: Any) -> str:
    """Text for markdown: ``<`` and ``&`` escaped outside code spans (``Bearer <token>`` must not read as a tag)."""
    pieces = re.split(r"(`[^`]*`)", str(text))
    return "".join(piece if piece.startswith("`") else html.escape(piece, quote=False) for piece in pieces)


def cell(text: Any) -> str:
    """Text for a markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(text: Any) -> str:
    text = str(text)
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# --- the command line -------------------------------------------------------------------------------------------


def _param_line(param: Any, ctx: Any) -> tuple[str, str]:
    """click's own rendering of the parameter (what `--help` shows), as a table row."""
    record = param.get_help_record(ctx)
    if record is None:
        return code(param.name), ""
    names, meaning = record
    meaning = meaning.replace("  [required]", " **[required]**")
    if param.param_type_name == "argument":
        names = names.split(" ", 1)[0].upper() + (" " + names.split(" ", 1)[1] if " " in names else "")
    return code(names), meaning


def cli_page() -> str:
    import typer
    import typer._click as click_api

    from customs.cli import app
    from customs.cli.root import COMMANDS

    root = typer.main.get_command(app)
    lines = [
        GENERATED_NOTE,
        "# Command line reference\n\n",
        "Every command of `customs`, with its help, its arguments and its options, read from the command tree "
        "itself (the same text `customs COMMAND --help` prints). Exit codes, `--json` errors and how officials "
        "sign their acts: [Command-line conventions](cli-conventions.md).\n\n",
        f"{cell(root.help or '')}\n\n",
    ]
    panels: dict[str, list[str]] = {}
    for name, entry in COMMANDS.items():
        panels.setdefault(entry.panel, []).append(name)
    lines.append("| panel | commands |\n|---|---|\n")
    for panel, names in panels.items():
        lines.append(f"| {panel} | {', '.join(f'[`{n}`](#{anchor(n)})' for n in names)} |\n")
    lines.append("\n")

    def walk(command: Any, path: list[str], parent: Any) -> None:
        ctx = click_api.Context(command, info_name=path[-1], parent=parent)
        if len(path) > 1:
            depth = "##" if len(path) == 2 else "###"
            lines.append(f"{depth} `{' '.join(path)}` {{ #{anchor(' '.join(path[1:]))} }}\n\n")
            if not (command.help or "").strip():
                raise ReferenceError(f"`{' '.join(path)}` has no help text")
            pieces = " ".join(
                piece[1:-1].upper() if piece.startswith("{") else piece for piece in command.collect_usage_pieces(ctx)
            )
            lines.append(f"```text\n{' '.join(path)} {pieces}\n```\n\n")
            lines.append(_help_text(command.help) + "\n\n")
            params = [p for p in command.params if not getattr(p, "hidden", False) and p.name != "help"]
            if params:
                lines.append("| argument or option | meaning |\n|---|---|\n")
                for param in params:
                    name, meaning = _param_line(param, ctx)
                    lines.append(f"| {name} | {cell(prose(meaning))} |\n")
                lines.append("\n")
        if hasattr(command, "list_commands"):
            for sub in command.list_commands(ctx):
                walk(command.get_command(ctx, sub), [*path, sub], ctx)

    walk(root, ["customs"], None)
    return "".join(lines)


def anchor(name: str) -> str:
    return "cmd-" + name.replace(" ", "-")


def _help_text(text: str) -> str:
    """Typer's help: paragraphs separated by blank lines; ``\\b`` marks a block click keeps as written."""
    paragraphs = []
    for block in text.strip().split("\n\n"):
        if block.startswith("\b"):
            paragraphs.append("```text\n" + block.lstrip("\b\n") + "\n```")
        else:
            paragraphs.append(prose(" ".join(block.split())))
    return "\n\n".join(paragraphs)


# --- settings ---------------------------------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    if text is None:
        text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("datetime.", "")
        text = text.replace("pydantic.types.", "")
    return text.replace(" | ", " or ")


def _default(field: Any) -> str:
    from pydantic import TypeAdapter
    from pydantic_core import PydanticUndefined

    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, Path):
        try:
            value = value.resolve().relative_to(ROOT)
        except ValueError:
            pass
        return code(str(value) + ("/" if (ROOT / value).is_dir() else ""))
    if isinstance(value, timedelta):
        return code(TypeAdapter(timedelta).dump_python(value, mode="json"))
    if isinstance(value, (dict, list)):
        return code(json.dumps(value, ensure_ascii=False))
    if isinstance(value, bool):
        return code(str(value).lower())
    return code(value)


def settings_page() -> str:
    from customs.core.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    lines = [
        GENERATED_NOTE,
        "# Settings reference\n\n",
        f"Every setting is an environment variable with the prefix `{prefix}` (pydantic-settings, "
        "`customs/core/settings.py`); a `.env` file is not read. Durations are ISO 8601 (`PT15M`) or seconds, "
        "lists and objects are JSON. This page is generated from the fields of `Settings`: "
        f"{len(Settings.model_fields)} settings.\n\n",
        "| setting | default | meaning |\n|---|---|---|\n",
    ]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ReferenceError(f"Settings.{name} has no description")
        env = f"{prefix}{name}".upper()
        lines.append(
            f'| <span id="{env.lower()}"></span>`{env}`<br>{code(_type_name(field.annotation))} '
            f"| {cell(_default(field))} | {cell(prose(field.description))} |\n"
        )
    return "".join(lines)


# --- the HTTP API -----------------------------------------------------------------------------------------------


def api_page() -> str:
    from customs.api.app import create_app

    document = create_app().openapi()
    info = document["info"]
    lines = [
        GENERATED_NOTE,
        "# Intake API reference\n\n",
        f"**{info['title']}**, version {info['version']} (OpenAPI {document.get('openapi', '')}). "
        f"{prose(info.get('description', ''))}\n\n",
        "Generated from the application's own OpenAPI document (`customs.api.app.create_app().openapi()`), which "
        "the running API also serves at `/openapi.json`, with Swagger UI at `/docs` and ReDoc at `/redoc`. "
        "How to use it: [the integrators' tutorial](../tutorials/integrators.md).\n\n",
        "| method | path | summary |\n|---|---|---|\n",
    ]
    operations = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            operations.append((path, method, operation))
            ref = f"op-{method}-{path}".replace("/", "-").replace("{", "").replace("}", "").replace("--", "-")
            lines.append(f"| `{method.upper()}` | [`{path}`](#{ref}) | {cell(operation.get('summary', ''))} |\n")
    lines.append("\n")
    for path, method, operation in operations:
        ref = f"op-{method}-{path}".replace("/", "-").replace("{", "").replace("}", "").replace("--", "-")
        lines.append(f"## `{method.upper()} {path}` {{ #{ref} }}\n\n")
        lines.append(f"**{operation.get('summary', '')}**\n\n")
        if operation.get("description"):
            lines.append(prose(_rst_literals(operation["description"])) + "\n\n")
        security = operation.get("security", document.get("security"))
        params = operation.get("parameters", [])
        if params:
            lines.append("| parameter | in | required | meaning |\n|---|---|---|---|\n")
            for param in params:
                meaning = param.get("description", "") or param.get("schema", {}).get("title", "")
                lines.append(
                    f"| `{param['name']}` | {param['in']} | {'yes' if param.get('required') else 'no'} "
                    f"| {cell(prose(_rst_literals(meaning)))} |\n"
                )
            lines.append("\n")
        body = operation.get("requestBody")
        if body:
            kinds = ", ".join(f"`{kind}`" for kind in body.get("content", {}))
            schemas = []
            for content in body.get("content", {}).values():
                ref_name = content.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
                if ref_name:
                    schemas.append(f"`{ref_name}`")
            lines.append(f"Request body: {kinds}" + (f" ({', '.join(schemas)})" if schemas else "") + ".\n\n")
        if security == []:
            lines.append("No authentication.\n\n")
        lines.append("| status | meaning |\n|---|---|\n")
        for status, response in operation.get("responses", {}).items():
            lines.append(f"| {status} | {cell(prose(_rst_literals(response.get('description', ''))))} |\n")
        lines.append("\n")
    schemas = document.get("components", {}).get("schemas", {})
    lines.append("## Schemas\n\nThe bodies named above, as the OpenAPI document defines them.\n\n")
    for name, schema in schemas.items():
        lines.append(f"### `{name}`\n\n")
        if schema.get("description"):
            lines.append(prose(_rst_literals(schema["description"])) + "\n\n")
        properties = schema.get("properties", {})
        if properties:
            required = set(schema.get("required", []))
            lines.append("| field | type | required | meaning |\n|---|---|---|---|\n")
            for prop, spec in properties.items():
                lines.append(
                    f"| `{prop}` | {cell(_schema_type(spec))} | {'yes' if prop in required else 'no'} "
                    f"| {cell(prose(_rst_literals(spec.get('description', ''))))} |\n"
                )
            lines.append("\n")
        elif schema.get("enum"):
            lines.append("One of " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".\n\n")
    return "".join(lines)


def _rst_literals(text: str) -> str:
    """FastAPI docstrings use ``double backquotes``; markdown wants one."""
    return text.replace("``", "`")


def _schema_type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return f"`{spec['$ref'].rsplit('/', 1)[-1]}`"
    if "anyOf" in spec:
        return " or ".join(_schema_type(s) for s in spec["anyOf"])
    if "allOf" in spec:
        return " and ".join(_schema_type(s) for s in spec["allOf"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"array of {_schema_type(spec.get('items', {}))}"
    if "enum" in spec:
        return " \\| ".join(f"`{v}`" for v in spec["enum"])
    if spec.get("format"):
        return f"{kind} ({spec['format']})"
    return kind


# --- reason codes -----------------------------------------------------------------------------------------------


def reasons_page() -> str:
    from customs.core.paths import LOCALE_DIR
    from customs.notices.catalogue import GENERIC, LANGUAGES, PART, PAYMENT, PLACE, STEP, entries

    tables = {language: entries(language, LOCALE_DIR) for language in LANGUAGES}
    english = tables["en"]
    codes = sorted({msgid for (context, msgid) in english if context is None})
    lines = [
        GENERATED_NOTE,
        "# Reason codes reference\n\n",
        "The reasons a declarant is given (a refused registration, a signature refused, a release waiting for an "
        "official), with the message a letter shows for each in each language, read from the gettext catalogues "
        "`locale/<lang>/LC_MESSAGES/reasons.po` (the files "
        "`customs/notices/catalogue.py` reads when it renders a letter; see `locale/README.md`). A reason is stored "
        "with its code, its path and its English message; the letter's message comes from this catalogue, with the "
        "reason's `params` in place of `{names}`. `CODE.variant` is one of several messages of a code; the generic "
        "message is used for a reason stored without the values the main one needs. Which checks give which codes: "
        "[How a declaration moves](../explanation/declaration-lifecycle.md#refusal-reason-codes). "
        f"{len(codes)} entries.\n\n"
        "Codes that never reach a letter are not in the catalogue; their pages explain them: officials' acts "
        "(`SIGNER_NOT_OFFICIAL`, `ACT_STALE`, `ALREADY_DECIDED`...: [Officials' signed acts]"
        "(../explanation/official-acts.md)), documents the authority signs (`SIGNER_NOT_AUTHORITY`, `NOT_SIGNED`...: "
        "[Documents the authority signs](../explanation/authority-documents.md)), CRL refresh (`CRL_EXPIRED`...: "
        "[The service](../explanation/service.md#scheduled-jobs)), and the command line's and the API's errors "
        "([Command-line conventions](cli-conventions.md), [Intake API](api.md)).\n\n",
        "| code | en | ru | kk |\n|---|---|---|---|\n",
    ]
    for msgid in codes:
        row = [f'<span id="{msgid.lower().replace(".", "-")}"></span>`{msgid}`']
        for language in ("en", "ru", "kk"):
            text = tables[language].get((None, msgid), "")
            generic = tables[language].get((GENERIC, msgid))
            if generic:
                text += f" *(generic: {generic})*"
            row.append(cell(prose(text)))
        lines.append("| " + " | ".join(row) + " |\n")
    parts = sorted(msgid for (context, msgid) in english if context == PART)
    lines.append(
        "\n## Pieces of signature messages\n\nA signature reason's message is built from these pieces around "
        'the code\'s own message (`msgctxt "part"`).\n\n| piece | en | ru | kk |\n|---|---|---|---|\n'
    )
    for msgid in parts:
        row = [f"`{msgid}`"] + [cell(prose(tables[language].get((PART, msgid), ""))) for language in ("en", "ru", "kk")]
        lines.append("| " + " | ".join(row) + " |\n")
    sections = (
        (
            PLACE,
            "Places in the declaration",
            "Where a reason is, as a letter names it (`customs/rules/places.py` parses the stored path into one of "
            "these keys, `customs.notices.catalogue.place_name` says it): `box.N` a box of the EAEU goods declaration, "
            "`sub.*` a field within its box, `entry.*` which goods item, document or payment, `unknown` any path it "
            "cannot place ([Notices](../explanation/notices.md#places-steps-payments-and-certificates)).",
        ),
        (STEP, "Processing steps", "The step a failure letter names (`failed_step`), `unknown` for any other."),
        (PAYMENT, "Payments of box 47", "How a letter names a payment it says is unpaid; `other` for any other code."),
    )
    for context, title, lead in sections:
        keys = sorted(msgid for (ctx, msgid) in english if ctx == context)
        lines.append(f'\n## {title}\n\n{lead} (`msgctxt "{context}"`)\n\n| key | en | ru | kk |\n|---|---|---|---|\n')
        for msgid in keys:
            row = [f"`{msgid}`"] + [cell(prose(tables[language].get((context, msgid), ""))) for language in ("en", "ru", "kk")]
            lines.append("| " + " | ".join(row) + " |\n")
    return "".join(lines)


# --- deployments ------------------------------------------------------------------------------------------------


def deployments_page() -> str:
    import yaml

    project = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    pool = project["definitions"]["customs_work_pool"]
    lines = [
        GENERATED_NOTE,
        "# Deployments reference\n\n",
        "The work pool and the deployments of `prefect.yaml`, which `customs serve` and `customs deploy` register "
        "(and `prefect deploy --all` accepts as they are). Schedules are in Kazakhstan time.\n\n",
        f"**Work pool `{pool['name']}`**: {pool.get('description', '')}\n\n",
        "| queue | priority | runs at once | what it holds |\n|---|---|---|---|\n",
    ]
    for queue in pool.get("queues", []):
        limit = queue.get("concurrency_limit")
        lines.append(
            f"| `{queue['name']}` | {queue.get('priority', '')} | {'no limit' if limit is None else limit} "
            f"| {cell(prose(queue.get('description', '')))} |\n"
        )
    lines.append("\n| deployment | flow | queue | schedule | tags |\n|---|---|---|---|---|\n")
    for deployment in project.get("deployments", []):
        schedules = deployment.get("schedules") or ([deployment["schedule"]] if deployment.get("schedule") else [])
        when = "; ".join(
            cell(
                (f"cron `{s['cron']}`" if s.get("cron") else f"every {s['interval']} s" if s.get("interval") else "")
                + (f" ({s['timezone']})" if s.get("timezone") else "")
            )
            for s in schedules
            if s
        )
        lines.append(
            f"| [`{deployment['name']}`](#{deployment['name']}) | `{deployment['entrypoint']}` "
            f"| `{deployment.get('work_pool', {}).get('work_queue_name', '')}` | {when or 'none (started on demand)'} "
            f"| {', '.join(f'`{t}`' for t in deployment.get('tags', []))} |\n"
        )
    lines.append("\n")
    for deployment in project.get("deployments", []):
        lines.append(f"## `{deployment['name']}`\n\n{prose(' '.join(deployment.get('description', '').split()))}\n\n")
    return "".join(lines)


# --- the hook ---------------------------------------------------------------------------------------------------

PAGES = {
    "reference/cli.md": cli_page,
    "reference/settings.md": settings_page,
    "reference/api.md": api_page,
    "reference/reason-codes.md": reasons_page,
    "reference/deployments.md": deployments_page,
}


def on_files(files: Files, config: Any) -> Files:
    _project_on_path()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for uri, make in PAGES.items():
            if files.get_file_from_path(uri) is not None:
                raise ReferenceError(f"docs/{uri} is generated: remove the file from docs/")
            files.append(File.generated(config, uri, content=make()))
    # The screenshots stay in bench/screenshots/ (bench/screenshots.py takes them); the site serves them as img/.
    for picture in sorted((ROOT / "bench" / "screenshots").glob("*.png")):
        files.append(File.generated(config, f"img/{picture.name}", abs_src_path=str(picture)))
    return files
