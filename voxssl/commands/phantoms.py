"""``voxssl phantoms``: write a folder of synthetic abdominal CT or MR volumes with organ labels."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from voxssl.commands.common import (
    QUIET_OPTION,
    FloatTriple,
    IntTriple,
    command,
    triple_option,
)

#: ``--cases N``: how many phantoms, in ``voxssl phantoms`` and ``voxssl demo`` alike.
CASES_HELP = "Number of phantoms (cases) to generate."


def phantoms(
    out_dir: Path = typer.Argument(
        ...,
        metavar="OUT_DIR",
        help="Folder to write images/, labels/ and dataset.json into.",
        show_default=False,
    ),
    cases: int = typer.Option(8, "--cases", "-n", min=1, metavar="N", help=CASES_HELP),
    modality: Literal["ct", "mr"] = typer.Option("ct", "--modality", "-m", help="ct (HU) or mr."),
    seed: int = typer.Option(
        0, "--seed", min=0, metavar="SEED", help="Data set seed; case i depends only on (seed, i)."
    ),
    shape: IntTriple | None = triple_option(
        "--shape",
        int,
        "Voxels X,Y,Z (default 160,128,48; alone keeps a 400x320x240 mm field of view).",
    ),
    spacing: FloatTriple | None = triple_option(
        "--spacing", float, "Voxel size in mm X,Y,Z (default 2.5,2.5,5)."
    ),
    orientation: str | None = typer.Option(
        None,
        "--orientation",
        metavar="CODES",
        help="Store every case in these axis codes (e.g. RAS, LPS); default: drawn per case.",
    ),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Generate procedural abdominal phantoms (images + canonical organ labels).

    Re-running with the same settings rewrites nothing: case i depends only on (seed, i) and the
    grid, and a larger --cases extends the data set.
    """
    from voxssl.data.phantoms import write_phantom_dataset

    paths = write_phantom_dataset(
        out_dir,
        n=cases,
        modality=modality,
        seed=seed,
        shape=shape,
        spacing=spacing,
        orientation=orientation,
        progress=not quiet,
    )
    typer.echo(
        f"wrote {len(paths)} {modality} phantoms to {out_dir} (dataset.json, images/, labels/)"
    )


def register(app: typer.Typer) -> None:
    command(
        app,
        "phantoms",
        phantoms,
        [
            "voxssl phantoms data/phantoms_ct --cases 16",
            "voxssl phantoms data/phantoms_mr --cases 4 --modality mr --shape 192,160,40 --spacing 2,2,6",
        ],
    )
