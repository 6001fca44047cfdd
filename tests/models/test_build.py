"""The one model builder of training, analysis and export: ``spikemlp.models.build`` and ``from_config``."""

from __future__ import annotations

import pytest
import torch

from spikemlp import models


def test_from_config_passes_the_run_keys_as_model_arguments():
    config = {
        "model": "mlp_spe_xt_cifar",
        "T": 3,
        "img_size": 16,
        "dtype": "float64",
        "model_kwargs": {"embed_dim": 6, "depths": [1, 1, 1, 1]},
    }
    model = models.from_config(config, num_classes=7)
    assert model.T == 3 and model.num_classes == 7 and model.embed_dim == 6
    assert next(model.parameters()).dtype == torch.float64
    assert model(torch.zeros(2, 3, 16, 16, dtype=torch.float64)).shape == (2, 7)  # img_size reached it


def _largest_drop_path(model) -> float:
    return max(getattr(m, "drop_prob", 0.0) for m in model.modules())


def test_from_config_leaves_null_keys_to_the_models_defaults():
    config = {"model": "snn_mlp_xt_cifar", "T": None, "img_size": None, "drop_path": 0.0}
    model = models.from_config(config, 10)
    default = models.create("snn_mlp_xt_cifar", num_classes=10)
    assert next(model.parameters()).dtype == torch.float32
    assert [p.shape for p in model.parameters()] == [p.shape for p in default.parameters()]
    assert _largest_drop_path(model) == _largest_drop_path(default) > 0
    deeper = models.from_config({**config, "drop_path": 0.3}, 10)  # drop_path -> drop_path_rate
    assert _largest_drop_path(deeper) == pytest.approx(0.3)


def test_build_takes_any_timm_name_and_names_close_matches_of_a_typo():
    assert models.build("resnet18", 3).fc.out_features == 3  # not ours: still built
    with pytest.raises(ValueError, match=r"unknown model 'mlp_spe_xt_cifr'\. Did you mean mlp_spe_xt_cifar"):
        models.build("mlp_spe_xt_cifr", 10)
    with pytest.raises(ValueError, match=r"does not take the arguments \['widht'\]"):
        models.build("mlp_spe_xt_cifar", 10, widht=3)
