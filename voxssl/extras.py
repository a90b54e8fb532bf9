"""Optional dependencies: the ``fewshot`` pip extra (``pip install 'voxssl[fewshot]'``).

* ``transformers``: DINOv2 ViT encoders (few-shot, ``voxssl dinov2``, ``voxssl classify``);
* ``peft``: LoRA adapters on DINOv2;
* ``scikit-image``: the Felzenszwalb superpixels of few-shot self-supervision.

A core install runs preprocessing, pretraining, the probes, fine-tuning, prediction, embeddings and
the weights hub without them. The features that need one import it through :func:`require`, so a
missing package is one clear line that says what to install, never a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from voxssl.errors import VoxsslError

#: import name -> (pip package, extra that installs it)
OPTIONAL = {
    "transformers": ("transformers>=4.40", "fewshot"),
    "peft": ("peft>=0.10", "fewshot"),
    "skimage": ("scikit-image>=0.22", "fewshot"),
}


class MissingDependencyError(VoxsslError):
    """A feature needs an optional package that is not installed."""


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (a package of :data:`OPTIONAL` or one of its submodules) for ``feature``.

    Only the absence of that package itself becomes a :class:`MissingDependencyError`; an import
    error inside an installed package (a broken install) propagates unchanged.
    """
    top = module.partition(".")[0]
    if top not in OPTIONAL:
        raise ValueError(f"{top} is not an optional dependency of voxssl")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing != top and not missing.startswith(top + "."):
            raise
        package, extra = OPTIONAL[top]
        found = "is not installed" if missing == top else f"has no module {missing} (too old?)"
        raise MissingDependencyError(
            f"{feature} needs {package}, which {found}: pip install 'voxssl[{extra}]' "
            f"(or pip install '{package}')"
        ) from None


__all__ = ["OPTIONAL", "MissingDependencyError", "require"]
