"""The package's import graph: no module imports from a folder above it (docs/architecture.md).

Layers, bottom to top; a module may import its own folder and any lower layer, nothing else.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pairless"

LAYERS = [
    {"__init__", "config", "modalities", "batch", "metrics", "utils"},
    {"data"},
    {"world"},  # the world writes datasets through data/
    {"model", "tokenizers"},
    {"training", "inference"},
    {"experiments"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _folder(module: str) -> str:
    """``pairless.training.train`` -> ``training``; ``pairless.config`` -> ``config``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, module: str) -> list[str]:
    """Every pairless module that ``path`` imports (at any depth of its body)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "pairless"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "pairless":
                continue
            if target == "pairless":  # from pairless import model -> pairless.model
                found += [f"pairless.{alias.name}" for alias in node.names]
            else:
                found.append(target)
    return found


def _modules() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)
        out.append((path, module))
    return out


def test_every_package_folder_has_a_layer():
    folders = {_folder(module) for _, module in _modules()}
    assert folders <= set(RANK), f"give these a layer in LAYERS: {sorted(folders - set(RANK))}"


def test_no_module_imports_from_a_folder_above_it():
    upward = []
    for path, module in _modules():
        own = _folder(module)
        for target in _imports(path, module):
            other = _folder(target)
            if other != own and RANK[other] >= RANK[own]:
                upward.append(f"{path.relative_to(PACKAGE.parent)} imports {target} ({own} -> {other})")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from pairless.commands import train\nfrom pairless import model\nfrom . import "
                     "storage\n")
    assert _imports(probe, "pairless.utils.probe") == ["pairless.commands", "pairless.model",
                                                       "pairless.utils"]
