"""The online linear probe: Dice scalars in TensorBoard at the configured steps, no effect on
training, and its recipe keys checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from voxssl.data.phantoms.cache import write_phantom_cache

SHAPE = (40, 32, 16)
CLASSES = ["liver", "spleen"]


def write_labelled_cache(cache_dir: Path, count: int = 3) -> Path:
    """``count`` labelled CT phantoms, scaled to [0, 1] like the CT preprocessing."""
    return write_phantom_cache(cache_dir, count, SHAPE, labelled=True, prefix="labelled")


@pytest.fixture(scope="module")
def labelled_cache(tmp_path_factory) -> Path:
    return write_labelled_cache(tmp_path_factory.mktemp("labelled_cache"))


def recipe_path(
    folder: Path, cache_dir: Path, name: str, pretrain_steps: int = 4, **online_probe
) -> Path:
    data = {
        "name": name,
        "seed": 3,
        "output_dir": str(folder / "runs"),
        "data": {"cache_dir": str(cache_dir)},
        "model": {
            "preset": "hierarchical",
            "base_channels": 4,
            "num_levels": 3,
            "projection_channels": 4,
            "projector_out": 16,
        },
        "pretrain": {
            "steps": pretrain_steps,
            "pairs_per_step": 2,
            "pairs_per_volume": 1,
            "patch_size": [16, 16, 8],
            "positives_per_pair": 64,
            "num_workers": 0,
            "checkpoint_every": 2,
            "log_every": 1,
            "image_every": 100,
            "local": {"shuffle_blocks": 50},
            "online_probe": online_probe,
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


PROBE = {
    "every": 2,
    "classes": CLASSES,
    "train_cases": 2,
    "val_cases": 1,
    "steps": 3,
    "lr": 0.01,
    "batch_size": 2,
    "patch_size": [16, 16, 8],
    "foreground_fraction": 0.5,
    "loss": "bce",
}


def scalar_events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_online_probe_logs_dice_without_changing_training(labelled_cache, tmp_path):
    from voxssl.config.recipe import load_recipe
    from voxssl.train.loop import pretrain

    probed = pretrain(
        load_recipe(recipe_path(tmp_path, labelled_cache, "probed", **PROBE)), progress=False
    )
    events = scalar_events(probed.run_dir)
    dice = events["online_probe/dice_mean"]
    assert [step for step, _ in dice] == [2, 4]
    assert all(0.0 <= value <= 1.0 for _, value in dice)
    organ_tags = {tag for tag in events if tag.startswith("online_probe/dice/")}
    assert organ_tags and organ_tags <= {f"online_probe/dice/{organ}" for organ in CLASSES}
    for tag in organ_tags:
        assert all(0.0 <= value <= 1.0 for _, value in events[tag])
    assert [step for step, _ in events["loss/total"]] == [1, 2, 3, 4]

    # the probe draws from its own generators and a frozen copy: training is bit-identical without it
    plain = pretrain(load_recipe(recipe_path(tmp_path, labelled_cache, "plain")), progress=False)
    assert plain.losses == probed.losses
    assert not any(tag.startswith("online_probe/") for tag in scalar_events(plain.run_dir))
    assert all(p.requires_grad for p in probed.model.parameters()) and probed.model.training


def test_unknown_online_probe_key_is_rejected_with_its_name(labelled_cache, tmp_path):
    from voxssl.config.recipe import load_recipe
    from voxssl.errors import ConfigError

    with pytest.raises(ConfigError, match="evry"):
        load_recipe(recipe_path(tmp_path, labelled_cache, "bad_key", evry=2))
    with pytest.raises(ConfigError, match="online_probe"):
        load_recipe(
            recipe_path(tmp_path, labelled_cache, "bad_organ", every=2, classes=["no_such_organ"])
        )


def test_too_few_labelled_cases_is_a_config_error_naming_the_field(labelled_cache, tmp_path):
    from voxssl.config.recipe import load_recipe
    from voxssl.errors import ConfigError
    from voxssl.train.loop import pretrain

    path = recipe_path(
        tmp_path, labelled_cache, "few", **{**PROBE, "train_cases": 3, "val_cases": 2}
    )
    with pytest.raises(
        ConfigError, match=r"pretrain\.online_probe needs train_cases \+ val_cases = 5"
    ):
        pretrain(load_recipe(path), progress=False)


def test_dice_scalars_average_scored_values_only():
    from voxssl.eval.metrics import CaseScores
    from voxssl.train.online_probe import dice_scalars

    scores = [
        CaseScores("a", dice={6: 0.8, 1: float("nan")}),
        CaseScores("b", dice={6: 0.4, 1: 0.5}),
    ]
    names = {6: "liver", 1: "spleen"}.__getitem__
    out = dice_scalars(scores, [6, 1], names)
    assert out == pytest.approx(
        {
            "online_probe/dice_mean": (0.8 + 0.45) / 2,
            "online_probe/dice/liver": 0.6,
            "online_probe/dice/spleen": 0.5,
        }
    )
    assert dice_scalars([CaseScores("c", dice={6: float("nan")})], [6], names) == {}
