"""Recipes by name: ``-c cifar10_cpu_speedrun`` from any folder.

A recipe is a path to a YAML file, or the name of one of the recipes shipped with the package
(``spikemlp/configs``, a link to the checkout's ``configs/`` that a wheel carries as files). A
``configs/NAME.yaml`` in the current folder comes first, so a checkout's edited recipes win.
"""

from __future__ import annotations

from pathlib import Path

PACKAGED = Path(__file__).resolve().parents[1] / "configs"


def names() -> list[str]:
    """The recipes shipped with the package."""
    return sorted(p.stem for p in PACKAGED.glob("*.yaml"))


def find(recipe: str | Path) -> Path:
    """The file ``recipe`` names: the path itself, else ``configs/NAME.yaml`` here, else a shipped one."""
    path = Path(recipe)
    if path.is_file() or len(path.parts) != 1:
        return path  # a path (found or not): the caller reports a missing file
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    for folder in (Path("configs"), PACKAGED):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"recipe {recipe} not found; the recipes shipped are: {', '.join(names())}")
