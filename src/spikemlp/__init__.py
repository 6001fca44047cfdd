"""spikemlp: spiking MLP vision models (MLP-SPE, SNN-MLP), trained fast and measured honestly.

Importing the package registers its models with timm, so ``timm.create_model("mlp_spe_t")`` works
after ``import spikemlp``.
"""

__version__ = "0.1.0"

from . import models as models  # noqa: E402  (registers the model families with timm)
from . import neurons as neurons  # noqa: E402

__all__ = ["models", "neurons", "__version__"]
