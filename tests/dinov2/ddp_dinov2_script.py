"""Launched by test_distributed.py through torchrun (2 gloo ranks): the distributed teacher targets
against one process, then a short DINOv2 run; each rank dumps what it holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from voxssl.config.recipe import load_recipe
from voxssl.dinov2.loop import pretrain_dinov2
from voxssl.distributed import init_distributed
from voxssl.losses.dino_targets import EMACenter, sinkhorn_knopp


def targets_check(ctx) -> dict:
    """Ranks hold 5 and 3 rows of the same 8: their Sinkhorn-Knopp rows must equal those of one
    process over all 8, and the center moves by the mean of the ranks' means."""
    scores = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    rows = slice(0, 5) if ctx.rank == 0 else slice(5, 8)
    local = sinkhorn_knopp(scores[rows], temperature=0.1, iterations=3, ctx=ctx)
    whole = sinkhorn_knopp(scores, temperature=0.1, iterations=3)[rows]
    center = EMACenter(6, momentum=0.9)
    center.update(scores[rows], ctx)
    expected = 0.1 * (scores[:5].mean(0) + scores[5:].mean(0)) / 2
    return {
        "sinkhorn_max_error": float((local - whole).abs().max()),
        "center_max_error": float((center.center[0] - expected).abs().max()),
    }


def main(recipe_path: str, out_dir: str) -> None:
    import os

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    checks = targets_check(init_distributed("cpu"))
    result = pretrain_dinov2(load_recipe(recipe_path), progress=False)
    out = Path(out_dir)
    state = {k: v.detach().clone().contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(
        json.dumps({"losses": result.losses, "checks": checks}), encoding="utf-8"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
