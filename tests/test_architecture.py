"""The package's shape, as docs/architecture.md states it: which part may import which, short functions,
one forward per block, and no reference to a document the repository does not hold."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "spikemlp"

# Parts that a part must not import (docs/architecture.md#what-each-part-may-import). The command-line
# modules (``commands.py``, ``cli.py``) wire parts together and are checked with their part.
FORBIDDEN = {
    "errors": {"*"},
    "_files": {"*"},
    "_checks": {"*"},
    "ops": {"layers", "models", "train", "analysis", "mfi", "export", "convert", "data", "cli"},
    "neurons": {"layers", "models", "train", "analysis", "mfi", "export", "convert", "data", "cli"},
    "layers": {"models", "train", "analysis", "mfi", "export", "convert", "data", "cli"},
    "data": {"ops", "neurons", "layers", "models", "train", "analysis", "mfi", "export", "convert", "cli"},
    "convert": {"train", "analysis", "mfi", "export", "cli", "checkpoint"},
    "checkpoint": {"train", "analysis", "mfi", "export", "cli"},
    "models": {"train", "mfi", "export", "cli"},
    "analysis": {"train", "mfi", "export", "convert", "cli"},
    "mfi": {"train", "export", "convert", "cli"},
    "export": {"train", "mfi", "cli"},
    "train": {"export", "mfi", "cli"},
    "deployment": {"train", "analysis", "export", "convert", "data", "cli"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_parts(path: Path, source: str | None = None) -> set[str]:
    """The spikemlp parts that a module imports (anywhere in it, lazily or not)."""
    package = list(path.relative_to(PACKAGE).parts[:-1])
    parts = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
                names = target[:1] or [alias.name for alias in node.names]
            elif (node.module or "").startswith("spikemlp."):
                names = node.module.split(".")[1:2]
            else:
                continue
            parts.update(names)
        elif isinstance(node, ast.Import):
            parts.update(a.name.split(".")[1] for a in node.names if a.name.startswith("spikemlp."))
    return parts


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_parts(path):
    part = _part(path)
    forbidden = FORBIDDEN.get(part, set())
    wrong = {p for p in _imported_parts(path) - {part} if "*" in forbidden or p in forbidden}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(wrong)}"


def test_the_import_check_sees_relative_and_lazy_imports():
    # The checker itself: lazy and relative imports are seen as the parts they name.
    module = PACKAGE / "analysis" / "probe.py"
    source = (
        "from . import energy\ndef f():\n    from ..train.trainer import x\n    import spikemlp.mfi.fold\n"
    )
    assert _imported_parts(module, source) == {"analysis", "train", "mfi"}
    assert _imported_parts(PACKAGE / "cli.py", "from . import __version__\nfrom .errors import E\n") == {
        "__version__",
        "errors",
    }


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_longer_than_100_lines(path):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100
    ]
    assert not long, f"{path.relative_to(PACKAGE)}: {', '.join(long)}"


def test_each_block_has_one_forward():
    # The blocks carry no switches between execution paths: alternatives are other modules.
    from spikemlp.layers import AxialTokenMixing, ChannelMLP

    for block in (AxialTokenMixing, ChannelMLP):
        names = set(vars(block))
        assert "forward" in names and not names & {"_spike_driven", "_packed", "spike_kernels"}
        source = Path(__import__(block.__module__, fromlist=["_"]).__file__).read_text()
        assert "_BatchNorm" not in source, f"{block.__name__} detects folded BatchNorms by type"


# The name of the design notes that live outside the repository, spelled so that this file does not cite
# them itself.
_OUTSIDE_DOC = "".join(("S", "P", "E", "C"))


def test_no_file_refers_to_a_spec_document():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    if not files:
        pytest.skip("not a git checkout")
    this = Path(__file__).relative_to(ROOT).as_posix()
    hits = []
    for name in files.split():
        path = ROOT / name
        if name == this or not path.is_file() or path.suffix in {".png", ".so", ".gz"}:
            continue
        if re.search(rf"\b{_OUTSIDE_DOC}\b", path.read_text(errors="ignore")):
            hits.append(name)
    assert not hits, f"files that refer to the outside design document: {hits}"
