"""Layering: analysis and export get models, checkpoints and data from models/, checkpoint and data/, never
from the training package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "spikemlp"


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, as an absolute dotted name."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.update([module] + [f"{module}.{a.name}" for a in node.names])
    return found


@pytest.mark.parametrize("part", ["analysis", "export"])
def test_no_import_of_the_training_package(part):
    offenders = {
        str(p.relative_to(SRC)): sorted(m for m in _imported_modules(p) if m.startswith("spikemlp.train"))
        for p in (SRC / part).rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_check_sees_relative_imports():
    imports = _imported_modules(SRC / "train" / "trainer.py")
    assert "spikemlp.checkpoint" in imports and "spikemlp.train.run_state" in imports
