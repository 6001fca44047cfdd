"""Model families, one file each; importing this module registers every variant with timm."""

from . import mlp_spe as mlp_spe  # noqa: E402  (registers mlp_spe_t, mlp_spe_s, mlp_s, mlp_spe_b, *_cifar)
from . import snn_mlp as snn_mlp  # noqa: E402  (registers snn_mlp_t, snn_mlp_s, snn_mlp_b, *_cifar)
from ._factory import build as build  # noqa: E402
from ._factory import create as create  # noqa: E402
from ._factory import from_checkpoint as from_checkpoint  # noqa: E402
from ._factory import from_config as from_config  # noqa: E402
from ._factory import list_models as list_models  # noqa: E402
