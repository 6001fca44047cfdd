"""Shared test fixtures: the real data sets beside the repository, and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets (CIFAR-10, Fashion-MNIST, Tiny-ImageNet subset) in ../shared/data."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found next to the repository ({SHARED_DATA.name} missing)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
