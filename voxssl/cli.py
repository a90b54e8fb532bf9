"""The ``voxssl`` command line. Thin: every verb lives in ``voxssl/commands/<group>.py`` and calls
the Python API by keyword; this file only assembles them and turns user errors into messages.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from voxssl import __version__
from voxssl.errors import VoxsslError

app = typer.Typer(
    name="voxssl",
    help="Dense self-supervised learning for 3D CT and MRI: preprocess, pretrain, probe, fine-tune, "
    "predict, few-shot, and pretrained weights.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
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
    """Console entry point: user errors become one line on stderr and exit code 1."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except VoxsslError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise
    # in non-standalone mode click returns the code of ``raise typer.Exit(code)`` instead of exiting
    if isinstance(rc, int) and rc:
        sys.exit(rc)


if __name__ == "__main__":
    main()
