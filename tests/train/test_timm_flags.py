"""timm's train.py flags beside ours, T left to the model, and the weights a fine-tuning run starts from."""

from __future__ import annotations

import timm
import torch
from safetensors.torch import save_file

import spikemlp  # noqa: F401  (registers the models)
from spikemlp.cli import build_parser
from spikemlp.models.plain_weights import load_initial_weights
from spikemlp.train.commands import _overrides
from spikemlp.train.config import TrainConfig, load_config
from spikemlp.train.trainer import build_model


def _parse(*argv: str):
    args = build_parser(["train"]).parse_args(["train", *argv])
    return args, _overrides(args)


def test_timm_flags_set_our_keys():
    args, values = _parse(
        "--output", "run", "-b", "32", "-j", "2", "--grad-accum-steps", "2", "--aa", "rand-m9-mstd0.5",
        "--model-ema", "--model-ema-decay", "0.99", "--amp",
    )  # fmt: skip
    assert args.out == "run"
    assert values == {
        "batch_size": 32,
        "workers": 2,
        "accum_steps": 2,
        "auto_augment": "rand-m9-mstd0.5",
        "ema": True,
        "ema_decay": 0.99,
        "amp": "fp16",  # timm's default --amp-dtype float16
    }


def test_amp_as_a_switch_with_a_dtype_and_as_our_value():
    assert _parse("--amp", "--amp-dtype", "bfloat16")[1] == {"amp": "bf16"}
    assert _parse("--amp", "bf16")[1] == {"amp": "bf16"}
    assert _parse("--out", "r")[1] == {}


def test_T_defaults_to_the_models_own():
    assert TrainConfig().T is None
    assert not hasattr(build_model(load_config(None, {"model": "snn_mlp_xt_cifar"}), 10), "T")  # no time
    assert build_model(TrainConfig(), 10).T == timm.create_model("mlp_spe_xt_cifar").T


def test_an_initial_checkpoint_gives_every_weight_but_a_classifier_of_another_size(tmp_path):
    source = timm.create_model("snn_mlp_xt_cifar", num_classes=10)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    model = timm.create_model("snn_mlp_xt_cifar", num_classes=5)
    head = model.head.weight.clone()
    load_initial_weights(model, False, str(tmp_path / "w.safetensors"))
    mine, theirs = model.state_dict(), source.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine if not k.startswith("head."))
    assert torch.equal(model.head.weight, head)


def test_pretrained_loads_the_models_released_weights(monkeypatch):
    calls = []
    monkeypatch.setattr("timm.models.load_pretrained", lambda model, **kw: calls.append(kw))
    model = timm.create_model("snn_mlp_xt_cifar", num_classes=7)
    load_initial_weights(model, True, None)
    assert calls and calls[0]["num_classes"] == 7 and calls[0]["filter_fn"] is not None


def test_training_starts_from_the_initial_checkpoint(tmp_path, capsys):
    from spikemlp.cli import main

    argv = ["train", "--out", str(tmp_path / "run"), "--data", "synthetic", "--synthetic_size", "64"]
    argv += ["--processes", "1", "-b", "32", "--epochs", "1", "--initial-checkpoint", str(tmp_path / "no.pt")]
    assert main(argv) == 2
    assert f"checkpoint not found: {tmp_path / 'no.pt'}" in capsys.readouterr().err
