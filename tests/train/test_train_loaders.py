"""The batch sources: pipeline choice, sharding over ranks, repeated augmentation, the timm path on
real images."""

from __future__ import annotations

import pytest
import timm
import torch
import train_tiny_models  # noqa: F401  (registers train_tiny_snn)

from spikemlp import checkpoint as ckpt
from spikemlp.data.loaders import (
    build_eval_loader,
    build_train_loader,
    choose_pipeline,
    facts,
    synthetic_split,
)
from spikemlp.train import train
from spikemlp.train.config import from_dict
from spikemlp.train.optim import param_groups


def _labels_seen(loader) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


def test_pipeline_choice():
    split = synthetic_split("train", 64)
    assert choose_pipeline("auto", split, 32, None, None) == "tensor"
    assert choose_pipeline("auto", split, 32, 224, None) == "timm"  # the authors' CIFAR protocol resizes
    assert (
        choose_pipeline("auto", split, 32, None, "rand-m9-mstd0.5-inc1") == "timm"
    )  # RandAugment is per image
    with pytest.raises(ValueError, match="native size 32, but img_size is 224; use --pipeline timm"):
        choose_pipeline("tensor", split, 32, 224, None)


def test_evaluation_shards_are_disjoint_and_cover_the_test_set_once():
    cfg = from_dict({"data": "synthetic", "batch_size": 16})
    split = synthetic_split("test", 1000)  # 250 images: not a multiple of the world size or the batch
    f = facts("synthetic")
    whole = _labels_seen(build_eval_loader(cfg, split, f, "tensor", 0, 1, "cpu"))
    shards = [build_eval_loader(cfg, split, f, "tensor", r, 3, "cpu") for r in range(3)]
    images = [torch.cat([x for x, _ in s]) for s in shards]
    assert sum(len(i) for i in images) == len(split.labels) == len(whole)
    # rank r sees images r, r + 3, r + 6, ... exactly once, unaugmented
    full = torch.cat([x for x, _ in build_eval_loader(cfg, split, f, "tensor", 0, 1, "cpu")])
    for r in range(3):
        torch.testing.assert_close(images[r], full[r::3])


def test_training_shards_split_each_epoch_between_ranks():
    cfg = from_dict({"data": "synthetic", "batch_size": 8, "crop_padding": 0, "hflip": 0.0})
    split = synthetic_split("train", 64)
    f = facts("synthetic")
    loaders = [build_train_loader(cfg, split, f, "tensor", r, 2, "cpu") for r in range(2)]
    for lo in loaders:
        lo.set_epoch(3)
    batches = [torch.cat([x for x, _ in lo]) for lo in loaders]
    assert len(batches[0]) == len(batches[1]) == 32
    key = lambda x: {tuple(v.flatten()[:20].tolist()) for v in x}  # noqa: E731
    assert not key(batches[0]) & key(batches[1])  # disjoint halves


def test_resume_skip_drops_exactly_the_batches_already_seen():
    cfg = from_dict({"data": "synthetic", "batch_size": 8, "crop_padding": 2})
    split = synthetic_split("train", 64)
    loader = build_train_loader(cfg, split, facts("synthetic"), "tensor", 0, 1, "cpu")
    loader.set_epoch(5)
    full = list(loader)
    loader.set_epoch(5)
    loader.skip(3)
    rest = list(loader)
    assert len(rest) == len(full) - 3
    for (a, ya), (b, yb) in zip(full[3:], rest):
        assert torch.equal(a, b) and torch.equal(ya, yb)  # same order and the same random crops


def test_timm_pipeline_resizes_and_repeats_each_image():
    cfg = from_dict(
        {
            "data": "synthetic",
            "batch_size": 6,
            "img_size": 16,
            "pipeline": "timm",
            "workers": 0,
            "repeated_aug": 3,
            "auto_augment": "rand-m9-mstd0.5-inc1",
            "reprob": 0.25,
        }
    )
    split = synthetic_split("train", 64, image_size=8)
    f = facts("synthetic", 8)
    loader = build_train_loader(cfg, split, f, "timm", 0, 1, "cpu")
    loader.set_epoch(0)
    x, y = next(iter(loader))
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32
    # RepeatAugSampler on one process: consecutive triples of the same image (differently augmented)
    indices = list(loader.sampler)
    assert indices[0] == indices[1] == indices[2] and indices[3] == indices[4] == indices[5]
    assert y[0] == y[1] == y[2]
    ev = build_eval_loader(cfg, synthetic_split("test", 64, image_size=8), f, "timm", 0, 1, "cpu")
    assert next(iter(ev))[0].shape[1:] == (3, 16, 16)


def test_snn_mlp_tau_and_v_th_get_their_own_group():
    model = timm.create_model("snn_mlp_xt_cifar")
    groups = {g["name"]: g for g in param_groups(model, from_dict({"weight_decay": 0.05}), lr=1e-3)}
    expected = {id(p) for _, p in model.lif_parameters()}
    assert expected and {id(p) for p in groups["lif"]["params"]} == expected
    assert groups["lif"]["lr"] == 1e-4 and groups["lif"]["weight_decay"] == 0.0


def test_tiny_imagenet_trains_through_the_timm_pipeline(shared_data, tmp_path):
    cfg = from_dict(
        {
            "model": "train_tiny_snn",
            "T": 2,
            "img_size": 32,
            "data": "tiny_imagenet",
            "data_dir": str(shared_data),
            "auto_augment": "rand-m9-mstd0.5-inc1",
            "reprob": 0.25,
            "mixup": 0.8,
            "cutmix": 1.0,
            "smoothing": 0.1,
            "batch_size": 16,
            "eval_batch_size": 250,
            "workers": 0,
            "epochs": 1,
            "max_steps_per_epoch": 2,
            "threads": 1,
            "device": "cpu",
            "progress": False,
            "opt": "adamw",
            "lr": 1e-3,
        }
    )
    s = train(cfg, tmp_path / "run").summary
    assert s["test_images"] == 1000 and s["steps"] == 2  # the 20-class validation set: 50 images per class
    # the classes in the folder, not Tiny-ImageNet-200's 200: a 20-way head
    heads = [v for k, v in ckpt.load_weights(tmp_path / "run")[0].items() if k.startswith("head")]
    assert heads and all(v.shape[0] == 20 for v in heads)
    assert 0.0 <= s["top1"] <= 100.0 and s["top5"] >= s["top1"]
