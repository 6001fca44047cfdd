"""The facts the batch sources use: the data layer's one record of each data set, and the synthetic set."""

from __future__ import annotations

import pytest

from spikemlp.data import DATASET_INFO
from spikemlp.data.loaders import data_names, facts, synthetic_split


def test_facts_are_the_data_layers_record():
    for name, info in DATASET_INFO.items():
        assert facts(name) is info
    assert facts("cifar10", 224).image_size == 32  # a real set keeps its native size


def test_the_synthetic_set_has_its_own_facts_at_any_size():
    small, large = facts("synthetic"), facts("synthetic", 64)
    assert (small.image_size, large.image_size, small.num_classes, small.channels) == (32, 64, 10, 3)
    assert small.mean == (0.5, 0.5, 0.5) and small.std == (0.25, 0.25, 0.25)
    split = synthetic_split("test", 100, image_size=8)
    assert split.images.shape == (25, 3, 8, 8) and len(set(split.labels.tolist())) == small.num_classes
    assert "synthetic" in data_names() and "synthetic" not in DATASET_INFO


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown data set 'mnst'\. Did you mean mnist.*synthetic"):
        facts("mnst")


def test_a_tiny_imagenet_subset_is_counted_by_the_classes_in_its_folder(shared_data):
    from spikemlp.data.loaders import EvalSettings, eval_batches

    settings = EvalSettings(data_dir=str(shared_data), workers=0, img_size=64)
    _, split, facts_ = eval_batches("tiny_imagenet", "test", settings, "cpu")
    assert facts_.num_classes == len(split.classes) == 20  # not Tiny-ImageNet-200's 200
    assert facts("tiny_imagenet").num_classes == 200  # the record of the full set stays as it is
