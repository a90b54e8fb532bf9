"""One spelling across code, recipes and docs: normalise / colour (British, as the recipe keys
``normalise_imagenet`` and the docs). The American forms remain only in other libraries' names
(``torch.nn.functional.normalize``, torchvision's ``Normalize``) and in verbatim quotes of papers."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ALLOWED = (
    "F.normalize(",
    "functional.normalize",
    "Normalize",  # torchvision / MONAI class names
    "l2 normalization",  # quotes of the DINO paper
    "weight normalized",
    "normalize the result",  # quote of seed 004
)


def _american_lines() -> list[str]:
    paths = [REPO_ROOT / "README.md"]
    for folder in ("voxssl", "recipes", "docs", "benchmarks", "scripts"):
        paths += sorted((REPO_ROOT / folder).rglob("*"))
    found = []
    for path in paths:
        if path.suffix not in (".py", ".md", ".yaml", ".sh") or "results" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            text = line
            for allowed in ALLOWED:
                text = text.replace(allowed, "")
            if re.search(r"normaliz|(?<![a-z])color(?!u)|COLOR", text, re.I):
                found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    return found


def test_one_spelling():
    assert _american_lines() == []
