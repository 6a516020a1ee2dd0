"""How `customs` shows its options and arguments and says what is wrong with a command line.

Help in plain metavars, as click always showed them: ``--json`` a flag with no value, ``--grounds TEXT``,
``--code [10|11|12]``, ``--key PATH``, arguments as ``KEY DECISION`` (required) or ``[KEY]``. Typer (0.29) shows
the Python annotation instead (``--json <bool>``, ``--grounds <list[str]>``, ``{key} {decision}``) and has no
setting for it: ``plain_help`` gives every parameter of a command tree the display of ``PlainOption`` or
``PlainArgument`` (subclasses that only change how a parameter is shown, never how it is parsed).

Errors in one line, in the command line's terms: typer checks values with pydantic and repeats its wording
(``Invalid value for 'decision': Value error, 'maybe' is not one of 'release', 'refuse'.``); ``usage_message``
says ``DECISION: 'maybe' is not one of release, refuse``.
"""

from __future__ import annotations

import re
from typing import Any

from typer._click import Command, Context  # typer >= 0.29 carries its own click: its commands are that copy's
from typer._click import exceptions as errors
from typer.core import TyperArgument, TyperOption

__all__ = ["PlainArgument", "PlainOption", "errors", "plain_help", "plain_param", "usage_message"]

# typer's type labels (customs' options use these) -> click's metavars
_TYPE_NAMES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "bool": "BOOLEAN",
    "path": "PATH",
    "Path": "PATH",
    "file": "FILE",
    "directory": "DIRECTORY",
    "datetime": "DATETIME",
}


def plain_type(param: Any, ctx: Context) -> str:
    """``TEXT``, ``INTEGER``, ``PATH``, ``[a|b]`` (choices), ``INTEGER RANGE``... for a parameter's values; a list
    option shows the type of one value (it is repeated, its help says so)."""
    label = param.display_type(ctx).removeprefix("<").removesuffix(">")
    if label.startswith("list[") and label.endswith("]"):
        label = label[len("list[") : -1]
    descriptor = param.type_descriptor
    if descriptor.is_choice or (descriptor.is_datetime and descriptor.parameter_info.formats):
        return f"[{label}]"
    return " ".join(_TYPE_NAMES.get(word, word.upper()) for word in label.replace(",", " ").split())


class PlainOption(TyperOption):
    """An option shown as click shows it: a flag alone, else its metavar (one given to ``typer.Option`` wins)."""

    def display_type_rich(self, ctx: Context) -> str | None:
        if self.metavar is not None:
            return self.metavar or None
        if self.is_flag or self.count:
            return None
        return plain_type(self, ctx)


class PlainArgument(TyperArgument):
    """An argument shown by its name in capitals (``KEY``), its choices after it, ``[KEY]`` when optional."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else self.name.upper()

    def display_type_rich(self, ctx: Context) -> str | None:
        return plain_type(self, ctx) if self.type_descriptor.is_choice else None

    def get_usage_pieces(self, ctx: Context) -> list[str]:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return [name if self.required else f"[{name}]"]


def plain_param(param: Any) -> None:
    """Show ``param`` plainly (its class becomes the display-only subclass of its own)."""
    if isinstance(param, TyperOption) and not isinstance(param, PlainOption):
        param.__class__ = PlainOption
    elif isinstance(param, TyperArgument) and not isinstance(param, PlainArgument):
        param.__class__ = PlainArgument


def plain_help(command: Command) -> Command:
    """Every parameter of ``command`` and of its subcommands, their ``--help`` included, shown plainly."""
    for param in command.params:
        plain_param(param)
    help_option = command.get_help_option(Context(command))  # made once, then kept by the command
    if help_option is not None:
        plain_param(help_option)
    for sub in (getattr(command, "commands", None) or {}).values():
        plain_help(sub)
    return command


def where(param: Any) -> str:
    """How the command line names ``param``: its long option (``--decision``) or the argument (``DECISION``)."""
    if param is None:
        return "$"
    if getattr(param, "param_type_name", "") == "option" and param.opts:
        return max(param.opts, key=len)
    return (param.metavar or param.name or "?").upper()


_NOT_ONE_OF = re.compile(r"^(?P<value>.*) is not one of (?P<choices>.*?)\.?$")


def _reason(exc: errors.BadParameter) -> str:
    """What is wrong with the value, without pydantic's wording ("Value error, ...", "Input should be ...")."""
    errors = exc.__cause__.errors() if hasattr(exc.__cause__, "errors") else None
    if not errors:
        text = exc.message
    else:
        error = errors[0]
        kind, value, context = error["type"], error.get("input"), error.get("ctx") or {}
        if kind == "value_error":
            text = str(context.get("error", error["msg"]))
        elif kind in {"int_parsing", "int_type", "int_from_float"}:
            text = f"{value!r} is not a whole number"
        elif kind in {"float_parsing", "float_type", "decimal_parsing"}:
            text = f"{value!r} is not a number"
        elif kind in {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}:
            bound = {"greater_than_equal": "at least", "greater_than": "more than", "less_than_equal": "at most"}
            limit = next(iter(context.values()), "?")
            text = f"{value!r}: must be {bound.get(kind, 'less than')} {limit}"
        else:
            text = f"{value!r}: " + re.sub(r"^Input should be", "should be", str(error["msg"]))
    match = _NOT_ONE_OF.match(text.strip())
    if match:  # 'maybe' is not one of 'release', 'refuse'.
        choices = ", ".join(c.strip().strip("'\"") for c in match["choices"].split(","))
        text = f"{match['value']} is not one of {choices}"
    return text.strip().rstrip(".")


def usage_message(exc: errors.UsageError) -> tuple[str, str]:
    """(where, message) for a usage error: the option or argument at fault and what is wrong, in one line."""
    param = getattr(exc, "param", None)
    if isinstance(exc, errors.MissingParameter):
        kind = exc.param_type or getattr(param, "param_type_name", "parameter")
        extra = param.get_missing_message(ctx=exc.ctx) if param is not None else None
        return where(param), f"missing {kind} {where(param)}" + (f" ({extra.rstrip('.')})" if extra else "")
    if isinstance(exc, errors.BadParameter):
        return where(param), f"{where(param)}: {_reason(exc)}"
    if isinstance(exc, errors.NoSuchOption):
        return exc.option_name, exc.format_message().replace("No such option", "no option").rstrip(".")
    message = exc.format_message()
    return "$", message[:1].lower() + message[1:].rstrip(".")
