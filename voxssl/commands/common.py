"""Options and helpers shared by the verbs (see the module docstring of ``voxssl.cli``).

Only the standard library and typer are imported here: every command module imports this one, and
``voxssl --help`` must not wait for torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import typer
import typer.core

#: ``--set key.path=value`` overrides, repeatable; the value is read as YAML.
OVERRIDES_OPTION = typer.Option(
    None,
    "--set",
    "-s",
    metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set data.cache_dir=/scratch/cache or --set "
    "preprocess.ct.spacing=1.5,1.5,2 (repeatable; values are YAML, X,Y,Z is a list).",
)

#: ``--quiet``: no progress bars.
QUIET_OPTION = typer.Option(False, "--quiet", "-q", metavar="", help="No progress bars.")


def flag(*names: str, help: str) -> Any:
    """A boolean flag (default off) without the ``<bool>`` value hint in ``--help``."""
    return typer.Option(False, *names, metavar="", help=help)


def recipe_argument(sections: str) -> Any:
    """The RECIPE argument: a YAML file that must exist (typer reports a missing one, exit 2)."""
    return typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        metavar="RECIPE",
        help=f"Recipe YAML with {sections} sections.",
        show_default=False,
    )


class IntTriple(tuple):
    """``X,Y,Z`` integers from the command line (``--shape 160,128,48``)."""


class FloatTriple(tuple):
    """``X,Y,Z`` numbers from the command line (``--spacing 2.5,2.5,5``)."""


def _triple(kind: type, text: str) -> tuple:
    try:
        values = tuple(kind(p) for p in str(text).replace("x", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        example = "160,128,48" if kind is int else "2.5,2.5,5"
        raise typer.BadParameter(
            f"expected three {kind.__name__}s X,Y,Z (e.g. {example}), got {text!r}"
        )
    return values


def _int_triple(text: str) -> IntTriple:
    return IntTriple(_triple(int, text))


def _float_triple(text: str) -> FloatTriple:
    return FloatTriple(_triple(float, text))


def triple_option(name: str, kind: type, help: str) -> Any:
    """An ``X,Y,Z`` option (annotate it ``IntTriple | None`` or ``FloatTriple | None``): the one
    way voxssl takes a triple on the command line; ``--set`` takes the same ``X,Y,Z`` (or a YAML
    list)."""
    return typer.Option(
        None,
        name,
        parser=_int_triple if kind is int else _float_triple,
        metavar="X,Y,Z",
        help=help,
        show_default=False,
    )


def help_from_doc(function: Callable, examples: list[str]) -> str:
    """The ``--help`` text of a verb: its docstring with prose paragraphs re-flowed (the terminal
    wraps them), then an ``Examples:`` block with one indented command per line."""
    paragraphs = inspect.cleandoc(function.__doc__ or "").split("\n\n")
    prose = [" ".join(line.strip() for line in p.splitlines()) for p in paragraphs if p.strip()]
    block = "Examples:\n" + "\n".join(f"  {example}" for example in examples)
    if len(prose) == 1:
        # typer dedents the text after the first paragraph (inspect.cleandoc); a leading blank
        # line keeps the examples' indentation when they follow the summary directly
        block = "\n" + block
    return "\n\n".join([*prose, block])


class Command(typer.core.TyperCommand):
    """A verb whose ``--help`` flag shows no ``<bool>`` value hint, like every other flag."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class Group(typer.core.TyperGroup):
    """A group of verbs (``voxssl``, ``voxssl weights``...) with the same ``--help`` flag."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


def command(app: typer.Typer, name: str, function: Callable, examples: list[str]) -> None:
    """Register ``function`` as ``voxssl NAME``: examples in ``--help``, readable value hints."""
    app.command(name, help=help_from_doc(function, examples), cls=Command)(function)
