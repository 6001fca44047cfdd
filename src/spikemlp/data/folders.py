"""ImageNet-style image folders, read image by image (streamed) through PIL.

Two layouts:
- ImageNet: ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``. Classes are the sorted folder names of
  ``train/`` (as torchvision's ImageFolder orders them), so train and val share label indices.
- Tiny-ImageNet-200: ``wnids.txt``, ``words.txt``, ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG``
  labelled by ``val/val_annotations.txt``. Labels index the sorted wnids (the order ImageFolder would
  give ``train/``); class names come from ``words.txt``.

Both return an ``ImageFileDataset``: a torch ``Dataset`` of ``(transform(PIL RGB image), label)``. Listing the
files is cheap; images are decoded only when an item is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .errors import DataError
from .in_memory import InMemorySplit

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def open_rgb(path: str | Path):
    """The image at ``path`` as an RGB PIL image (grayscale ones, which Tiny-ImageNet has, are expanded)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; the folder changed after it was listed.") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(
            f"{path}: cannot read this image ({err}); expected a JPEG/PNG file. Replace or delete it."
        ) from None


@dataclass(eq=False, repr=False)  # compared and shown as a Dataset (its sample list can be long)
class ImageFileDataset(Dataset):
    """Images listed as ``(path, label)`` pairs, decoded on access; ``targets``: every sample's label (class
    counts without decoding)."""

    samples: list[tuple[str, int]]
    classes: list[str]  # the class names
    class_ids: list[str]  # the folder names (wnids) they come from
    root: str | Path
    name: str
    split: str
    transform: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        self.root = str(self.root)
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = open_rgb(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> list[int]:
        return torch.bincount(
            torch.tensor(self.targets, dtype=torch.int64), minlength=self.num_classes
        ).tolist()

    def to_in_memory(self, size: int | None = None) -> InMemorySplit:
        """Decode every image into one uint8 tensor (for small sets such as Tiny-ImageNet, so that the
        ``TensorBatchLoader`` can be used). Images are resized to ``size`` x ``size`` when given; otherwise
        they must all have the size of the first."""
        arrays = []
        for path, _ in self.samples:
            im = open_rgb(path)
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BICUBIC)
            arrays.append(np.asarray(im))
        if not arrays:
            raise DataError(f"{self.root}: no images to load for split {self.split!r}.")
        shape = arrays[0].shape
        for (path, _), a in zip(self.samples, arrays, strict=True):
            if a.shape != shape:
                raise DataError(
                    f"{path}: image of size {a.shape[1]}x{a.shape[0]} but the first is {shape[1]}x{shape[0]}"
                    "; pass size= to resize all images to one size."
                )
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(self.targets, dtype=torch.int64)
        return InMemorySplit(
            images, labels, list(self.classes), name=self.name, split=self.split, source=self.root
        )


def _list_images(folder: Path) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        found += [os.path.join(dirpath, f) for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _subdirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _read_words(path: Path) -> dict[str, str]:
    """wnid -> names from a words.txt (``wnid<TAB>names`` per line); empty when the file is absent."""
    if not path.is_file():
        return {}
    words = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        wnid, _, names = line.partition("\t")
        if wnid.strip() and names.strip():
            words[wnid.strip()] = names.strip()
    return words


_IMAGENET_LAYOUT = "train/<class>/*.JPEG and val/<class>/*.JPEG (one folder per class)"


def read_image_folder(
    root: str | Path, split: str, transform: Callable | None = None, name: str = "imagenet"
) -> ImageFileDataset:
    """An ImageNet-style split: ``root/train/<class>/...`` for 'train', ``root/val/<class>/...`` for 'test'.
    Classes come from ``root/train`` (else ``root/val``), named by a ``words.txt`` beside them if any."""
    root = Path(root)
    sub = root / ("train" if split == "train" else "val")
    if not sub.is_dir():
        raise DataError(
            f"{root}: no {sub.name}/ folder; expected {_IMAGENET_LAYOUT}. Pass --data-dir to such a folder."
        )
    class_root = root / "train" if (root / "train").is_dir() else sub
    class_ids = _subdirs(class_root)
    if not class_ids:
        hint = ""
        if loose := _list_images(class_root):
            hint = f" It holds {len(loose)} images directly: sort them into one folder per class first."
        raise DataError(f"{class_root}: no class folders; expected {class_root}/<class>/*.JPEG.{hint}")
    index = {c: i for i, c in enumerate(class_ids)}
    samples: list[tuple[str, int]] = []
    empty = []
    for c in _subdirs(sub):
        if c not in index:
            raise DataError(
                f"{sub / c}: class folder not present in {class_root} (labels out of range: "
                f"{len(class_ids)} classes). Expected the same class folders in train/ and val/."
            )
        files = _list_images(sub / c)
        if not files:
            empty.append(c)
        samples += [(f, index[c]) for f in files]
    if not samples:
        raise DataError(
            f"{sub}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)} files in its class folders); "
            f"expected {_IMAGENET_LAYOUT}. Check that the archive was fully extracted."
        )
    if empty and split == "train":
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise DataError(
            f"{sub}: {len(empty)} class folder(s) without images ({shown}); expected images in every class "
            "folder of train/. Re-extract the data or remove the empty folders."
        )
    words = _read_words(root / "words.txt")
    classes = [words.get(c, c) for c in class_ids]
    return ImageFileDataset(samples, classes, class_ids, root, name, split, transform)


def read_tiny_imagenet(root: str | Path, split: str, transform: Callable | None = None) -> ImageFileDataset:
    """A Tiny-ImageNet-200 split ('train' or 'test' = val) in the layout of the original archive."""
    root = Path(root)
    wnids_file = root / "wnids.txt"
    if not wnids_file.is_file():
        raise DataError(
            f"{wnids_file}: file not found; expected the Tiny-ImageNet class list (one wnid a line)."
        )
    wnids = sorted({w.strip() for w in wnids_file.read_text(errors="replace").splitlines() if w.strip()})
    if not wnids:
        raise DataError(f"{wnids_file}: empty; expected one wnid a line. Replace it with the original.")
    index = {w: i for i, w in enumerate(wnids)}
    samples: list[tuple[str, int]] = []
    if split == "train":
        for w in wnids:
            folder = root / "train" / w / "images"
            if not folder.is_dir():
                raise DataError(
                    f"{folder}: folder not found; expected train/<wnid>/images/*.JPEG for every wnid in "
                    f"{wnids_file}. Re-extract the archive."
                )
            files = _list_images(folder)
            if not files:
                raise DataError(f"{folder}: no images; expected {w}_*.JPEG files. Re-extract the archive.")
            samples += [(f, index[w]) for f in files]
    else:
        ann = root / "val" / "val_annotations.txt"
        images = root / "val" / "images"
        if not ann.is_file() or not images.is_dir():
            raise DataError(
                f"{root / 'val'}: expected val/images/*.JPEG and val/val_annotations.txt. "
                "Re-extract the archive."
            )
        present = set(os.listdir(images))
        missing = []
        for n, line in enumerate(ann.read_text(errors="replace").splitlines(), start=1):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2:
                raise DataError(
                    f"{ann}:{n}: expected 'file<TAB>wnid<TAB>box', got {line!r}. Replace the file."
                )
            fname, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in index:
                raise DataError(
                    f"{ann}:{n}: class {wnid!r} is not in {wnids_file} (label out of range for "
                    f"{len(wnids)} classes). The annotations belong to another copy; replace them."
                )
            if fname not in present:
                missing.append(fname)
                continue
            samples.append((str(images / fname), index[wnid]))
        if missing:
            raise DataError(
                f"{images}: {len(missing)} image(s) named in {ann.name} are missing (e.g. {missing[0]}). "
                "Re-extract the archive."
            )
        if not samples:
            raise DataError(f"{ann}: lists no images; expected one line per validation image.")
    words = _read_words(root / "words.txt")
    classes = [words.get(w, w) for w in wnids]
    return ImageFileDataset(samples, classes, wnids, root, "tiny_imagenet", split, transform)
