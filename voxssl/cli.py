"""The ``voxssl`` command line. Thin: every verb lives in ``voxssl/commands/<group>.py`` and calls
the Python API by keyword; this file only assembles them and turns user errors into messages.

Adding a verb (``tests/test_cli.py`` checks every registered verb, new ones included):

1. Write it in ``voxssl/commands/<group>.py`` with a ``register(app)`` function and add the module
   to ``COMMAND_MODULES`` below.
2. **Lazy imports.** At module level a command module imports only the standard library, ``typer``
   and ``voxssl.commands.common`` -- never torch, numpy, MONAI, transformers, or a voxssl module
   that imports them. ``voxssl --help`` and a usage error must stay well under a second
   (``benchmarks/cli_startup.py``); torch alone takes seconds to import.
3. **Check before importing.** Inside the verb: check the arguments, load the recipe
   (``voxssl.config`` is torch-free) and the sections the verb needs, and only then import the
   heavy modules and work. A typo in a recipe is reported instantly, not after the imports.
4. **Let typer check what it can**: choices are ``Enum``/``Literal`` types, files that must exist
   use ``exists=True`` (``common.recipe_argument`` for RECIPE), triples are ``X,Y,Z`` options from
   ``common.triple_option`` (annotated ``IntTriple`` / ``FloatTriple``). Typer reports those as
   usage errors: its short message and exit code 2; so does ``raise typer.BadParameter`` for a
   combination of options that cannot work.
5. **Readable help**: flags come from ``common.flag`` / ``common.QUIET_OPTION`` (no ``<bool>``),
   options with values get a ``metavar`` (``DIR``, ``WEIGHTS``...), ``--set`` is
   ``common.OVERRIDES_OPTION``, and the verb is registered with ``common.command(app, name,
   function, examples)``, which adds one or two real examples to its ``--help``. Groups of verbs
   use ``cls=common.Group``.
6. User errors raise ``voxssl.errors.VoxsslError`` (one line naming the file or field): ``main``
   prints ``error: ...`` and exits 1, without a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from voxssl import __version__
from voxssl.commands.common import Group
from voxssl.errors import VoxsslError

app = typer.Typer(
    name="voxssl",
    help="Dense self-supervised learning for 3D CT and MRI: preprocess, pretrain, probe, fine-tune, "
    "predict, few-shot, and pretrained weights.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)

#: Modules that add their verbs to ``app`` through a ``register(app)`` function, in help order.
COMMAND_MODULES = (
    "voxssl.commands.phantoms",  # phantoms
    "voxssl.commands.preprocess",  # preprocess
    "voxssl.commands.pretrain",  # pretrain
    "voxssl.commands.downstream",  # linear-probe, fine-tune, predict
    "voxssl.commands.fewshot",  # few-shot train | eval | segment
    "voxssl.commands.dinov2",  # dinov2 pretrain
    "voxssl.commands.classify",  # classify train | eval
    "voxssl.commands.weights",  # weights list | info | download | path | import | export
    "voxssl.commands.demo",  # demo
    "voxssl.commands.embedding",  # embed, explore, one-shot
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"voxssl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version_callback,
        is_eager=True,
        metavar="",
        help="Print the version.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", metavar="", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    """Console entry point.

    Typer runs in its standard mode: it reports usage errors itself (its short message, exit code
    2), maps Ctrl-C to exit code 130 and honours ``raise typer.Exit(code)``. What reaches this
    function is a user error from voxssl (one line, exit code 1) or a bug (a traceback). Returns
    normally on success, so that tests and scripts can call ``main([...])``.
    """
    try:
        app(args=argv, prog_name="voxssl")
    except VoxsslError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise


if __name__ == "__main__":
    main()
