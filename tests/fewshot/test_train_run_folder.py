"""``voxssl few-shot train`` creates its run folder only once the encoder's weights have loaded."""

from __future__ import annotations

import yaml

from voxssl.cli import main


def test_bad_encoder_weights_leave_no_run_folder(phantom_cache, tmp_path, capsys):
    data = dict(phantom_cache["data"], output_dir=str(tmp_path / "runs"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    missing = tmp_path / "missing.safetensors"
    argv = [
        "few-shot",
        "train",
        str(recipe),
        "--group",
        "1",
        "--fold",
        "0",
        "-q",
        "--set",
        "fewshot.encoder.type=voxssl3d",
        "--set",
        f"fewshot.encoder.voxssl_weights={missing}",
    ]
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 1 and str(missing) in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
