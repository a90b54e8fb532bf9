"""``voxssl phantoms``: write a folder of synthetic abdominal CT or MR volumes with organ labels."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer


def register(app: typer.Typer) -> None:
    @app.command("phantoms")
    def phantoms(
        out_dir: Path = typer.Argument(
            ..., help="Folder to write images/, labels/ and dataset.json into."
        ),
        n: int = typer.Option(8, "--n", "-n", help="Number of phantoms (cases) to generate."),
        modality: Literal["ct", "mr"] = typer.Option(
            "ct", "--modality", "-m", help="ct (HU) or mr."
        ),
        seed: int = typer.Option(
            0, "--seed", help="Data set seed; case i depends only on (seed, i)."
        ),
        shape: tuple[int, int, int] | None = typer.Option(
            None,
            "--shape",
            help="Voxels X Y Z (default 160 128 48; alone keeps a 400x320x240 mm field of view).",
        ),
        spacing: tuple[float, float, float] | None = typer.Option(
            None, "--spacing", help="Voxel size in mm X Y Z (default 2.5 2.5 5)."
        ),
        orientation: str | None = typer.Option(
            None,
            "--orientation",
            help="Store every case in these axis codes (e.g. RAS, LPS); default: drawn per case.",
        ),
    ) -> None:
        """Generate procedural abdominal phantoms (images + canonical organ labels)."""
        from voxssl.data.phantoms import write_phantom_dataset

        paths = write_phantom_dataset(
            out_dir,
            n=n,
            modality=modality,
            seed=seed,
            shape=shape,
            spacing=spacing,
            orientation=orientation,
        )
        typer.echo(
            f"wrote {len(paths)} {modality} phantoms to {out_dir} (dataset.json, images/, labels/)"
        )
