"""spikemlp: spiking MLP vision models (MLP-SPE, SNN-MLP), trained fast and measured honestly.

Importing the package registers its models with timm, so ``timm.create_model("mlp_spe_t")`` works
after ``import spikemlp``.
"""

import importlib
import sys
from pathlib import Path

__version__ = "0.1.0"
__all__ = ["deploy", "models", "neurons", "__version__"]


def _run_as_the_command() -> bool:
    # The `spikemlp` script and `python -m spikemlp` (argv[0] is "-m" while the package is imported):
    # spikemlp.cli imports the models when a command needs them, so `spikemlp --help` need not wait
    # seconds for torch and timm.
    argv0 = (getattr(sys, "argv", None) or [""])[0]
    return argv0 == "-m" or Path(argv0).stem == "spikemlp"


def deploy(model):
    """``spikemlp.deployment.deploy``: a trained MLP-SPE as its fastest exact CPU inference module
    (docs/deployment.md). Imported on first call, so that ``import spikemlp`` loads no deployment code."""
    from .deployment import deploy as _deploy

    return _deploy(model)


def __getattr__(name: str):
    if name in ("models", "neurons"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not _run_as_the_command():
    from . import models as models  # noqa: E402  (registers the model families with timm)
    from . import neurons as neurons  # noqa: E402
