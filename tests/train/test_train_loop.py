"""The training loop on a tiny spiking model and synthetic data: what it writes, what it computes, how
it fails."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest
import timm
import torch
import train_tiny_models  # noqa: F401  (registers train_tiny_snn)
from safetensors.torch import load_file

from spikemlp import checkpoint as ckpt
from spikemlp.cli import main as cli_main
from spikemlp.data.loaders import synthetic_split
from spikemlp.train import NonFiniteLossError, load_config, load_state, train
from spikemlp.train.config import ConfigError, from_dict
from spikemlp.train.epoch import criterion
from spikemlp.train.optim import build_scheduler, param_groups
from spikemlp.train.run_state import seed_everything
from spikemlp.train.trainer import preflight

TINY = dict(
    model="train_tiny_snn",
    T=2,
    img_size=8,
    data="synthetic",
    synthetic_size=256,
    batch_size=32,
    epochs=2,
    opt="adamw",
    lr=0.02,
    weight_decay=0.0,
    threads=1,
    device="cpu",  # CPU tests on any machine
    progress=False,
    crop_padding=0,
)
ON_CPU = ["--data", "synthetic", "--device", "cpu"]  # for `spikemlp eval`


def tiny(**overrides):
    return from_dict({**TINY, **overrides})


def params(model_or_state) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state, torch.nn.Module):
        return {k: v.detach().clone() for k, v in model_or_state.named_parameters()}
    return dict(model_or_state)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = tiny(epochs=5, synthetic_size=512)
    result = train(cfg, run)
    return cfg, run, result


def test_training_learns_and_writes_the_run_folder(trained_run):
    cfg, run, result = trained_run
    s = json.loads((run / "summary.json").read_text())
    assert s["top1"] > 80.0  # chance is 10%; the synthetic classes are easy
    for key in ("top1", "epochs", "wall_seconds", "images_per_second", "peak_memory_mb"):
        assert key in s and s[key] > 0
    assert s["epochs"] == 5 and s["steps"] == 5 * (512 // 32)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert float(rows[-1]["test_top1"]) == pytest.approx(s["top1"], abs=1e-3)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert s["best_top1"] == pytest.approx(max(float(r["test_top1"]) for r in rows), abs=1e-3)
    assert ckpt.load_meta(run / "best")["top1"] == pytest.approx(s["best_top1"])
    assert list(run.glob("events.out.tfevents.*")), "TensorBoard event file missing"
    assert load_config(run / "config.yaml") == cfg
    # last/ holds the final weights, and they are the returned model's
    last, _ = ckpt.load_weights(run / "last")
    for k, v in result.model.state_dict().items():
        assert torch.equal(last[k], v)
    assert ckpt.load_state(run / "last")["counters"]["global_step"] == s["steps"]


def _best_model_and_test_images_by_hand(cfg, run):
    """The run's best weights in a model built without the library's loader, and the normalised test set."""
    model = timm.create_model("train_tiny_snn", num_classes=10, T=2, img_size=8)
    model.load_state_dict(load_file(str(run / "best" / ckpt.MODEL_FILE)))
    model.eval()
    split = synthetic_split("test", cfg.synthetic_size, image_size=cfg.img_size)
    return model, split, (split.images.float() / 255 - 0.5) / 0.25


def test_eval_command_matches_an_independent_evaluation(trained_run, tmp_path, capsys):
    cfg, run, _ = trained_run
    out_json = tmp_path / "eval.json"
    assert cli_main(["eval", "--checkpoint", str(run), *ON_CPU, "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    reported = json.loads(out_json.read_text())
    # independent evaluation: rebuild the model by hand, normalise by hand, count by hand
    model, split, x = _best_model_and_test_images_by_hand(cfg, run)
    with torch.no_grad():
        logits = model(x)
    pred = logits.argmax(1)
    top1 = 100.0 * (pred == split.labels).float().mean().item()
    top5 = 100.0 * (logits.topk(5, 1).indices == split.labels[:, None]).any(1).float().mean().item()
    per_class = [100.0 * (pred[split.labels == c] == c).float().mean().item() for c in range(10)]
    assert reported["top1"] == pytest.approx(top1, abs=1e-4)
    assert reported["top5"] == pytest.approx(top5, abs=1e-4)
    assert reported["per_class_accuracy"] == pytest.approx(per_class, abs=1e-4)
    assert reported["count"] == len(split.labels) == sum(reported["per_class_total"])
    assert re.search(rf"top-1 {top1:.2f}%\s+top-5 {top5:.2f}%", printed)
    assert printed.count("class_") == 10  # one entry per class


def test_eval_with_flip_tta_averages_the_logits_of_the_image_and_its_mirror(trained_run, tmp_path):
    cfg, run, _ = trained_run
    out_json = tmp_path / "eval.json"
    args = [
        "eval",
        "--checkpoint",
        str(run),
        *ON_CPU,
        "--tta",
        "hflip",
        "--json",
        str(out_json),
    ]
    assert cli_main(args) == 0
    reported = json.loads(out_json.read_text())
    model, split, x = _best_model_and_test_images_by_hand(cfg, run)
    with torch.no_grad():
        plain = model(x)
        mirrored = model(x.flip(3))  # left-right mirror: the width axis
    both = (plain + mirrored) / 2
    assert reported["tta"] == "hflip"
    assert reported["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(both, split.labels).item(), rel=1e-5
    )
    assert reported["top1"] == pytest.approx(100.0 * (both.argmax(1) == split.labels).float().mean().item())
    single = 100.0 * (plain.argmax(1) == split.labels).float().mean().item()
    assert reported["top1_single_view"] == pytest.approx(single)


def test_flip_tta_in_a_recipe_is_used_by_training_evaluations(tmp_path):
    s = train(tiny(epochs=1, tta="hflip"), tmp_path / "run").summary
    assert s["tta"] == "hflip" and s["top1_single_view"] is not None
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert float(rows[-1]["test_top1_single_view"]) == pytest.approx(s["top1_single_view"], abs=1e-3)
    with pytest.raises(ConfigError, match="tta"):
        tiny(tta="vflip")


def test_cosine_schedule_with_warmup_follows_the_formula():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = from_dict({"lr": 1.0, "warmup_lr": 0.1, "min_lr": 0.0})
    sched = build_scheduler(opt, cfg, global_batch=128, total_steps=10, warmup_steps=2)
    lrs = []
    for step in range(11):
        sched.step_update(num_updates=step)
        lrs.append(opt.param_groups[0]["lr"])
    expected = [0.1, 0.55] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(9)]
    assert lrs == pytest.approx(expected, abs=1e-12)


def test_lr_scales_with_the_global_batch_when_asked():
    from spikemlp.train.optim import scaled_lr

    cfg = from_dict({"lr": 5e-4, "lr_base_batch": 512, "warmup_lr": 5e-7, "min_lr": 5e-6})
    assert scaled_lr(cfg, 1024) == pytest.approx((1e-3, 1e-6, 1e-5))


def test_param_groups_split_lif_scalars_and_weight_decay_exclusions():
    model = timm.create_model("train_tiny_snn", lif_scalars=True)
    cfg = from_dict(
        {"weight_decay": 0.05, "wd_exclude_bias_norm": True, "lif_lr": 1e-4, "lif_weight_decay": 0.0}
    )
    groups = {g["name"]: g for g in param_groups(model, cfg, lr=1e-3)}
    names = {id(p): n for n, p in model.named_parameters()}
    as_names = {k: sorted(names[id(p)] for p in g["params"]) for k, g in groups.items()}
    assert as_names == {
        "decay": ["conv.weight", "head.weight"],
        "no_decay": ["bn.bias", "bn.weight", "head.bias"],
        "lif": ["Vth", "tau"],
    }
    assert (groups["decay"]["weight_decay"], groups["no_decay"]["weight_decay"]) == (0.05, 0.0)
    assert (groups["lif"]["lr"], groups["lif"]["weight_decay"]) == (1e-4, 0.0)


@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_fused_optimizer_gives_the_loop_implementations_update(opt):
    from spikemlp.train.optim import build_optimizer

    steps = {}
    for fused in (True, False):
        torch.manual_seed(0)
        model = timm.create_model("train_tiny_snn", lif_scalars=True)
        cfg = from_dict({"opt": opt, "lr": 0.05, "weight_decay": 0.05, "opt_fused": fused})
        optimizer = build_optimizer(model, cfg, global_batch=8)
        assert bool(optimizer.defaults.get("fused")) is fused
        x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
        steps[fused] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(steps[True], steps[False]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lif_scalars_stay_frozen_during_the_first_epoch_then_learn(tmp_path):
    cfg = tiny(model_kwargs={"lif_scalars": True}, max_steps_per_epoch=3, lif_lr=0.05, eval_every=5)
    one = train(from_dict({"epochs": 1}, base=cfg), tmp_path / "one").model
    two = train(from_dict({"epochs": 2}, base=cfg), tmp_path / "two").model
    assert torch.equal(one.tau, torch.tensor([0.25])) and torch.equal(one.Vth, torch.tensor([0.1]))
    assert not torch.equal(params(one)["conv.weight"], timm.create_model("train_tiny_snn").conv.weight)
    assert not torch.equal(two.tau, torch.tensor([0.25])) and not torch.equal(two.Vth, torch.tensor([0.1]))


def test_gradient_accumulation_equals_the_large_batch(tmp_path):
    base = dict(model_kwargs={"norm": False}, dtype="float64", opt="sgd", lr=0.1, eval_every=5)
    big = train(tiny(batch_size=64, accum_steps=1, **base), tmp_path / "big").model
    acc = train(tiny(batch_size=32, accum_steps=2, **base), tmp_path / "acc").model
    a, b = params(big), params(acc)
    assert not torch.equal(
        a["conv.weight"], timm.create_model("train_tiny_snn", norm=False).conv.weight.double()
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # compiles the tiny model (10-30 s on a CPU)
def test_compiled_training_equals_eager_and_saves_plain_weights(tmp_path, monkeypatch):
    base = dict(dtype="float64", opt="sgd", lr=0.1, epochs=1, max_steps_per_epoch=3, eval_every=5)
    compile_, compiled_modules = torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled_modules.append(m) or compile_(m, **kw))
    torch._dynamo.reset()
    compiled = train(tiny(compile=True, **base), tmp_path / "compiled")
    assert compiled_modules == [compiled.model]  # once, for the training steps
    eager = train(tiny(**base), tmp_path / "eager").model
    a, b = params(compiled.model), params(eager)
    assert not torch.equal(a["conv.weight"], timm.create_model("train_tiny_snn").conv.weight.double())
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-12)
    weights, _ = ckpt.load_weights(tmp_path / "compiled" / "last")  # no "_orig_mod." prefixes
    timm.create_model("train_tiny_snn", num_classes=10, T=2, img_size=8).double().load_state_dict(weights)


def test_gradient_clipping_bounds_the_update(tmp_path):
    cfg = tiny(
        opt="sgd", momentum=0.0, lr=1.0, clip_grad=0.01, epochs=1, max_steps_per_epoch=1, dtype="float64"
    )
    seed_everything(cfg.seed)
    before = params(timm.create_model("train_tiny_snn", num_classes=10, T=2, img_size=8).double())
    after = params(train(cfg, tmp_path / "run").model)
    step = torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before))
    assert step.item() == pytest.approx(0.01, rel=1e-4)  # lr 1 x gradient clipped to norm 0.01 (+1e-6 guard)


def test_ema_with_zero_decay_tracks_the_weights(tmp_path):
    run = tmp_path / "run"
    result = train(tiny(ema=True, ema_decay=0.0, epochs=1, max_steps_per_epoch=3), run)
    ema, _ = ckpt.load_weights(run / "last", ema=True)
    for k, v in result.model.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(ema[k], v), k
    assert result.summary["ema_top1"] == pytest.approx(result.summary["top1"])


def test_mixing_uses_the_soft_target_loss_and_smoothing_otherwise():
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    assert isinstance(criterion(tiny(mixup=0.8), mixing=True), SoftTargetCrossEntropy)
    assert isinstance(criterion(tiny(smoothing=0.1), mixing=False), LabelSmoothingCrossEntropy)
    assert isinstance(criterion(tiny(), mixing=False), torch.nn.CrossEntropyLoss)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = tiny(model_kwargs={"nan_after": 5}, checkpoint_every_steps=2, epochs=3)
    with pytest.raises(
        NonFiniteLossError, match=r"loss became nan at step 6 \(epoch 1, batch 6\).*kept .*last \(step 4\)"
    ):
        train(cfg, run)
    assert load_state(run / "last")["counters"]["global_step"] == 4
    weights, _ = ckpt.load_weights(run / "last")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_the_log_sums_are_read_at_the_read_points_only(tmp_path, monkeypatch):
    # The loss and accuracy sums stay on the device; the host reads them every log_every steps and at the
    # epoch's end (the non-finite stop has its own check per step, above).
    from spikemlp.train.epoch import EpochRunner

    reads = []
    read = EpochRunner._read
    monkeypatch.setattr(
        EpochRunner, "_read", lambda self, *a: reads.append(self.state.global_step) or read(self, *a)
    )
    train(tiny(log_every=5, epochs=1), tmp_path / "run")
    assert reads == [5, 8]  # log_every, then the end of the epoch


def test_time_budget_fits_the_schedule_and_ends_in_time(tmp_path):
    run = tmp_path / "run"
    budget_min = 0.12  # 7.2 s
    s = train(tiny(epochs=1000, synthetic_size=512, time_budget=budget_min, lr=0.02), run).summary
    assert s["stopped_by"] == "time_budget"
    assert 1 < s["epochs"] < 1000
    assert s["wall_seconds"] <= budget_min * 60 + 1.0
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert float(rows[-1]["lr"]) < 0.1 * 0.02  # the cosine ran (nearly) to its end inside the budget


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "train_tiny_snm"}, r"unknown model 'train_tiny_snm'\. Did you mean train_tiny_snn"),
        ({"data": "cifar11"}, r"unknown data set 'cifar11'\. Did you mean cifar10.*Known data sets"),
        ({"model": "train_tiny_snn", "T": 2, "model_kwargs": {"widht": 3}}, r"does not take the arguments"),
    ],
)
def test_bad_names_give_one_clear_error(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train(tiny(**overrides), tmp_path / "run")
    with pytest.raises(ValueError, match=message):  # the same error before worker processes would start
        preflight(tiny(**overrides), tmp_path / "run")


def test_a_missing_data_set_names_where_it_looked(tmp_path):
    with pytest.raises(
        ValueError, match=rf"(?s)cifar10 not found.*cifar-10-batches-py.*{re.escape(str(tmp_path))}"
    ):
        train(tiny(data="cifar10", data_dir=str(tmp_path)), tmp_path / "run")
    with pytest.raises(ValueError, match=r"cifar10 not found"):
        preflight(tiny(data="cifar10", data_dir=str(tmp_path)), tmp_path / "run")


def test_an_existing_run_is_not_overwritten(trained_run):
    _, run, _ = trained_run
    with pytest.raises(ValueError, match="already holds a training run; continue it with --resume"):
        train(tiny(), run)
    with pytest.raises(ValueError, match="already holds a training run"):
        preflight(tiny(), run)


def test_worker_processes_are_not_started_for_a_run_that_cannot_start(tmp_path, monkeypatch, capsys):
    import spikemlp.train.distributed as distributed

    def no_workers(*args):
        raise AssertionError("workers were started")

    monkeypatch.setattr(distributed, "run_local_workers", no_workers)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = ["train", "--out", str(tmp_path / "run"), "--model", "train_tiny_snm", "--data", "synthetic"]
    assert cli_main([*args, "--processes", "2", "--device", "cpu"]) == 2
    assert "unknown model 'train_tiny_snm'" in capsys.readouterr().err


def test_refitting_the_schedule_keeps_the_lr_continuous_and_ends_at_the_new_total():
    from spikemlp.train.optim import ScheduleClock

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, from_dict({"lr": 1.0, "min_lr": 0.0}), 128, total_steps=100, warmup_steps=10)
    clock = ScheduleClock(10, 100)

    def lr_at(step):
        sched.step_update(num_updates=clock(step))
        return opt.param_groups[0]["lr"]

    assert lr_at(5) == pytest.approx(1e-6 + 5 * (1 - 1e-6) / 10)  # warm-up untouched by the clock
    before = lr_at(40)
    assert before == pytest.approx(0.5 * (1 + math.cos(math.pi * 30 / 90)))
    clock.refit(40, 70)  # the budget allows fewer steps than planned
    assert lr_at(40) == pytest.approx(before)
    assert lr_at(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 60 / 90)))  # half-way through the rest
    assert lr_at(70) == pytest.approx(0.0, abs=1e-12)


def test_eval_with_spike_kernels_gives_the_dense_results(tmp_path, trained_run, capsys):
    # A small MLP-SPE run; its checkpoint evaluated by the dense layers and by the spike kernels.
    from spikemlp.layers import spike_matmul

    if spike_matmul.unavailable_reason() is not None:
        pytest.skip(spike_matmul.unavailable_reason())
    kwargs = {"patch_size": 2, "embed_dim": 6, "depths": [1, 1]}
    train(tiny(model="mlp_spe_xt_cifar", model_kwargs=kwargs, epochs=1), tmp_path / "spe")
    reports = []
    for i, extra in enumerate(([], ["--spike-kernels"], ["--deploy"])):
        out = tmp_path / f"eval{i}.json"
        args = ["eval", "--checkpoint", str(tmp_path / "spe"), *ON_CPU, "--json", str(out)]
        assert cli_main(args + extra) == 0
        reports.append(json.loads(out.read_text()))
    dense, fast, deployed = reports
    assert not dense["spike_kernels"] and fast["spike_kernels"]
    assert fast["top1"] == dense["top1"] and fast["loss"] == pytest.approx(dense["loss"], rel=1e-5)
    # --deploy: the deployed model's predictions are the eval model's (compared on the first batch).
    assert deployed["top1"] == dense["top1"] and deployed["loss"] == pytest.approx(dense["loss"], rel=1e-3)
    check = deployed["deployment"]
    assert check["same_predictions"] == check["images"] > 0
    assert "same predictions" in capsys.readouterr().out
    # A model without spike kernels: a clear error, not a silent dense run.
    _, run, _ = trained_run
    capsys.readouterr()
    assert cli_main(["eval", "--checkpoint", str(run), *ON_CPU, "--spike-kernels"]) != 0
    assert "train_tiny_snn has no spike-driven kernels" in capsys.readouterr().err
    assert cli_main(["eval", "--checkpoint", str(run), *ON_CPU, "--deploy"]) != 0
    assert "deploy supports MLP-SPE/MLP-S models" in capsys.readouterr().err
