"""`spikemlp models`: every registered spikemlp model with the parameter and MAC numbers of
docs/mlp_spe.md#variants and docs/snn_mlp.md#network-and-variants."""

from __future__ import annotations

import json

from spikemlp import cli
from spikemlp.models import list_models


def test_models_table_shows_spec_numbers(capsys):
    assert cli.main(["models", "mlp_spe_t"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("mlp_spe_t "))
    assert "224x224" in row and "25.229M" in row and "4.983G" in row


def test_models_json_and_num_classes(capsys):
    assert cli.main(["models", "mlp_s", "--json", "--num-classes", "10"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["mlp_s"]
    assert rows[0]["params"] == 33_746_098 and rows[0]["num_classes"] == 10
    assert cli.main(["models", "mlp_s", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)[0]
    assert round(default["macs_per_step"] / 1e9, 3) == 7.117
    # only the classifier changes: 768 inputs x (1000 - 10) fewer outputs
    assert default["macs_per_step"] - rows[0]["macs_per_step"] == 768 * 990


def test_listing_covers_every_family_module():
    names = list_models()
    assert {"mlp_spe_t", "mlp_spe_s", "mlp_s", "mlp_spe_b", "mlp_spe_xt_cifar"} <= set(names)
    assert "resnet50" not in names  # timm's own models are not listed


def test_unknown_pattern_is_a_clear_error(capsys):
    assert cli.main(["models", "resnet*"]) == 2
    assert "no spikemlp model matches 'resnet*'; known models: " in capsys.readouterr().err
