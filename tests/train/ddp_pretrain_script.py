"""Launched by test_distributed.py through torchrun: pretrain, then dump this rank's results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from voxssl.config.recipe import load_recipe
from voxssl.train.loop import pretrain


def main(recipe_path: str, out_dir: str) -> None:
    import os

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    result = pretrain(load_recipe(recipe_path), progress=False)
    out = Path(out_dir)
    params = {name: p.detach().clone() for name, p in result.model.named_parameters()}
    save_file(params, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(
        json.dumps({"losses": result.losses, "terms": result.terms}), encoding="utf-8"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
