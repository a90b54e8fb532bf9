"""Import structure of voxssl, read from the source (no module is imported here).

* imports run top-down: a module imports voxssl at its top, never inside a function, except the
  CLI verbs (``voxssl/commands``), which import the library when the verb runs so that
  ``voxssl --help`` starts in a fraction of a second; ``if TYPE_CHECKING`` imports are annotations;
* the packages form no cycle (``config`` below ``data``, ``hub`` below ``eval`` ...);
* no ImportError is swallowed (a broken module must fail loudly, not look like a missing feature).
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "voxssl"
LAZY_ALLOWED = ("voxssl/commands/",)
#: ``except ImportError`` that is not about voxssl: the one place that turns a missing optional
#: package into an install hint.
IMPORT_ERROR_ALLOWED = {"voxssl/extras.py"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _voxssl_imports(tree: ast.AST) -> list[tuple[ast.stmt, str, bool]]:
    """(statement, imported module, inside a function) for every voxssl import outside
    ``if TYPE_CHECKING``."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and not child.level:
                if child.module.split(".")[0] == "voxssl":
                    found.extend(
                        (child, f"{child.module}.{a.name}", in_function) for a in child.names
                    )
            elif isinstance(child, ast.Import):
                found.extend(
                    (child, a.name, in_function) for a in child.names if a.name.startswith("voxssl")
                )
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@pytest.fixture(scope="module")
def trees() -> dict[str, tuple[Path, ast.AST]]:
    return {
        name: (path, ast.parse(path.read_text(encoding="utf-8")))
        for name, path in _modules().items()
    }


def test_imports_are_at_the_top_of_modules(trees):
    lazy = []
    for _, (path, tree) in trees.items():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(LAZY_ALLOWED):
            continue
        lazy += [
            f"{rel}:{s.lineno} imports {m}" for s, m, inside in _voxssl_imports(tree) if inside
        ]
    assert not lazy, "imports inside functions:\n" + "\n".join(lazy)


def test_packages_form_no_cycle(trees):
    modules = {name: path for name, (path, _) in trees.items()}
    package = lambda name: ".".join(name.split(".")[:2])  # noqa: E731
    edges: dict[str, set[str]] = defaultdict(set)
    why: dict[tuple[str, str], str] = {}
    for name, (_, tree) in trees.items():
        for _, imported, _ in _voxssl_imports(tree):
            target = _resolve(imported, modules)
            if target and package(target) != package(name):
                edges[package(name)].add(package(target))
                why.setdefault((package(name), package(target)), f"{name} -> {target}")

    def cycle_from(start: str, node: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(edges[node]):
            if nxt == start:
                return [*path, nxt]
            if nxt not in path:
                found = cycle_from(start, nxt, [*path, nxt])
                if found:
                    return found
        return None

    for start in sorted(edges):
        cycle = cycle_from(start, start, [start])
        if cycle:
            steps = [why[(a, b)] for a, b in itertools.pairwise(cycle)]
            pytest.fail("package cycle " + " -> ".join(cycle) + ":\n" + "\n".join(steps))


def test_no_import_error_is_swallowed(trees):
    swallowed = []
    for _, (path, tree) in trees.items():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                caught = ast.unparse(node.type)
                if ("ImportError" in caught or "ModuleNotFoundError" in caught) and (
                    rel not in IMPORT_ERROR_ALLOWED
                ):
                    swallowed.append(f"{rel}:{node.lineno} except {caught}")
    assert not swallowed, "ImportError caught:\n" + "\n".join(swallowed)
