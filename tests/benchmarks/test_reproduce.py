"""benchmarks/reproduce.py: every table runs end to end with --smoke (phantoms, tiny models), and
every recipe of recipes/paper/ is used by a table and states its table and deviations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "recipes" / "paper"


@pytest.fixture(scope="module")
def reproduce(benchmark_script):
    return benchmark_script("reproduce")


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_every_paper_recipe_is_reproduced_and_states_its_table_and_deviations(reproduce):
    used = set()
    for table in reproduce.TABLES.values():
        used.add(table.recipe)
        used.update(r.pretrain for r in table.rows if r.pretrain)
        used.update(r.recipe for r in table.rows if r.recipe)
    # seed 004 and DINOv2-ALPNet / SSL-ALPNet (seed 002's MediDino recipes have their own driver)
    recipes = {
        p.name
        for p in PAPER.glob("*.yaml")
        if p.name.startswith(("seed004_", "dinov2_alpnet_", "ssl_alpnet_"))
    }
    assert recipes == used, recipes ^ used
    for name in recipes:
        header = (PAPER / name).read_text(encoding="utf-8").split("\nname:")[0]
        assert "Table" in header and "Deviations that remain" in header, name


@pytest.mark.parametrize(
    "table", ["seed004-table1", "seed004-table2", "seed004-table3", "dinov2-ct", "dinov2-mri"]
)
def test_smoke_run_of_a_table_end_to_end(reproduce, tmp_path, table, capsys):
    code = reproduce.main(
        [table, "--smoke", "--work", str(tmp_path / "work"), "--results", str(tmp_path), "--quiet"]
    )
    assert code == 0
    result = json.loads((tmp_path / f"reproduce_{table.replace('-', '_')}_smoke.json").read_text())
    spec = reproduce.TABLES[table]
    assert result["smoke"] is True and "do not estimate" in result["note"]
    assert [r["row"] for r in result["rows"]] == [r.name for r in spec.rows]
    published = result["published"]["rows"]
    for row in result["rows"]:
        if row["published_row"] is not None:
            assert row["published_row"] in published
        for values in row["subsets"].values():
            present = [v for v in values.values() if v is not None]
            assert present and all(math.isfinite(v) and 0 <= v <= 100 for v in present)
    if table == "seed004-table3":  # 4/8/42 images: each subset reported on its own
        assert all(list(r["subsets"]) == ["1", "all"] for r in result["rows"])
    if table == "seed004-table2":  # the published-weights row went through the foreign importer
        assert result["rows"][0]["weights"].endswith(".pt")
    # the recipes ran unchanged except the recorded overrides
    assert all(any(o.startswith("data.sources=") for o in v) for v in result["overrides"].values())
    out = capsys.readouterr().out
    assert "ours / paper" in out and result["published"]["source"] in out
