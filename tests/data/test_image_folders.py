"""ImageNet-style folders: the real Tiny-ImageNet subset, an ImageNet layout written here, bad folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dataset_writers import write_png
from PIL import Image

from spikemlp.data import DataError, ImageFileDataset, load_split, read_image_folder, read_tiny_imagenet


@pytest.fixture(scope="module")
def tiny(shared_data):
    root = shared_data / "tiny-imagenet-200-20cls"
    return root, {s: load_split("tiny_imagenet", s, data_dir=shared_data) for s in ("train", "test")}


def test_real_tiny_imagenet_sizes_and_classes(tiny):
    root, splits = tiny
    train, val = splits["train"], splits["test"]
    assert isinstance(train, ImageFileDataset)
    assert len(train) == 10_000 and len(val) == 1_000
    assert train.num_classes == val.num_classes == 20
    assert train.class_counts() == [500] * 20 and val.class_counts() == [50] * 20
    wnids = sorted((root / "wnids.txt").read_text().split())
    assert train.class_ids == wnids
    words = dict(line.split("\t") for line in (root / "words.txt").read_text().splitlines())
    assert train.classes == [words[w] for w in wnids]


def test_real_tiny_imagenet_labels_follow_folders_and_annotations(tiny):
    root, splits = tiny
    train, val = splits["train"], splits["test"]
    for path, label in train.samples[::997]:
        assert f"/train/{train.class_ids[label]}/images/" in path
    ann = {}
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        f, wnid = line.split("\t")[:2]
        ann[f] = wnid
    assert len(ann) == 1_000
    for path, label in val.samples:
        assert ann[path.rsplit("/", 1)[1]] == val.class_ids[label]


def test_real_tiny_imagenet_images_decode_to_rgb_64(tiny):
    _, splits = tiny
    image, label = splits["test"][7]
    assert image.mode == "RGB" and image.size == (64, 64)
    assert label == splits["test"].targets[7]
    # with a transform, the transform's output comes back
    ds = read_tiny_imagenet(splits["test"].root, "test", transform=lambda im: torch.tensor(np.asarray(im)))
    assert ds[7][0].shape == (64, 64, 3)
    assert torch.equal(ds[7][0], torch.tensor(np.asarray(image)))


def _imagenet(root, classes=("n02", "n01", "n03"), per_class=2, val_per_class=1, size=(6, 5)):
    """train/<class>/*.png|.JPEG and val/<class>/... with a distinct solid colour per image."""
    colours = {}
    for split, n in (("train", per_class), ("val", val_per_class)):
        for ci, c in enumerate(classes):
            for k in range(n):
                colour = (10 * ci + k, 100 + k, 200 if split == "val" else 50)
                arr = np.full((size[1], size[0], 3), colour, np.uint8)
                path = root / split / c / f"{c}_{k}.png"
                write_png(path, arr)
                colours[str(path)] = colour
    return colours


def test_imagenet_folder_layout_written_here(tmp_path):
    root = tmp_path / "imagenet"
    colours = _imagenet(root)
    # a JPEG among the PNGs, and a non-image file that must be ignored
    Image.fromarray(np.full((5, 6, 3), 128, np.uint8)).save(root / "train" / "n01" / "extra.JPEG")
    (root / "train" / "n01" / "notes.txt").write_text("not an image")
    train = load_split("imagenet", "train", data_dir=tmp_path)
    val = load_split("imagenet", "test", data_dir=tmp_path)
    assert train.class_ids == ["n01", "n02", "n03"]  # sorted folder names
    assert train.class_counts() == [3, 2, 2] and val.class_counts() == [1, 1, 1]
    for ds in (train, val):
        for i, (path, label) in enumerate(ds.samples):
            assert path.split("/")[-2] == ds.class_ids[label]
            if path in colours:
                image, y = ds[i]
                assert y == label and image.size == (6, 5)
                assert image.getpixel((3, 2)) == colours[path]


def test_imagenet_words_txt_gives_names_and_to_in_memory(tmp_path):
    root = tmp_path / "imagenet"
    colours = _imagenet(root, classes=("n01", "n02"), per_class=2)
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tgreat white shark\n")
    val = read_image_folder(root, "test")
    assert val.classes == ["goldfish, Carassius auratus", "great white shark"]
    mem = read_image_folder(root, "train").to_in_memory()
    assert mem.images.shape == (4, 3, 5, 6) and mem.images.dtype == torch.uint8
    ds = read_image_folder(root, "train")
    for i, (path, label) in enumerate(ds.samples):
        assert mem.labels[i] == label
        assert tuple(mem.images[i, :, 0, 0].tolist()) == colours[path]


# --- bad input ------------------------------------------------------------------------------------------


def test_imagenet_folder_without_images(tmp_path):
    root = tmp_path / "imagenet"
    for c in ("n01", "n02"):
        (root / "val" / c).mkdir(parents=True)
        (root / "val" / c / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"imagenet/val: no images found .*expected train/<class>/\*\.JPEG"):
        read_image_folder(root, "test")


def test_imagenet_flat_val_folder(tmp_path):
    root = tmp_path / "imagenet"
    write_png(root / "val" / "ILSVRC2012_val_00000001.JPEG", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"val: no class folders.*holds 1 images directly: sort them"):
        read_image_folder(root, "test")


def test_imagenet_empty_train_class_and_missing_split(tmp_path):
    root = tmp_path / "imagenet"
    _imagenet(root, classes=("n01", "n02"))
    (root / "train" / "n03").mkdir()
    with pytest.raises(DataError, match=r"train: 1 class folder\(s\) without images \(n03\)"):
        read_image_folder(root, "train")
    with pytest.raises(DataError, match=r"nowhere: no train/ folder; expected train/<class>"):
        read_image_folder(tmp_path / "nowhere", "train")


def test_imagenet_val_class_unknown_to_train(tmp_path):
    root = tmp_path / "imagenet"
    _imagenet(root, classes=("n01", "n02"))
    write_png(root / "val" / "n99" / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(
        DataError, match=r"val/n99: class folder not present in .*train \(labels out of range"
    ):
        read_image_folder(root, "test")


def test_corrupt_image_names_the_file(tmp_path):
    root = tmp_path / "imagenet"
    _imagenet(root, classes=("n01",), per_class=1)
    bad = root / "train" / "n01" / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    ds = read_image_folder(root, "train")
    i = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(DataError, match=r"broken.JPEG: cannot read this image .*Replace or delete it"):
        ds[i]


def test_tiny_imagenet_annotation_with_unknown_class(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    (root / "wnids.txt").parent.mkdir(parents=True)
    (root / "wnids.txt").write_text("n01\nn02\n")
    write_png(root / "val" / "images" / "val_0.JPEG", np.zeros((4, 4, 3), np.uint8))
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn07\t0\t0\t3\t3\n")
    with pytest.raises(
        DataError, match=r"val_annotations.txt:1: class 'n07' is not in .*wnids.txt \(label out of range"
    ):
        read_tiny_imagenet(root, "test")
    (root / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn02\t0\t0\t3\t3\nval_1.JPEG\tn01\t0\t0\t3\t3\n"
    )
    with pytest.raises(
        DataError, match=r"images: 1 image\(s\) named in val_annotations.txt are missing \(e.g. val_1"
    ):
        read_tiny_imagenet(root, "test")
    (root / "train" / "n01" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train/n01/images: no images"):
        read_tiny_imagenet(root, "train")
