"""CIFAR-10 and CIFAR-100 in the python pickle layout (``cifar-10-batches-py/``, ``cifar-100-python/``).

Each batch is a pickled dict with a uint8 ``data`` array ``[N, 3072]`` (1024 red, 1024 green, 1024 blue
values per row, so rows reshape to ``[N, 3, 32, 32]``) and a list of labels. Only the standard keys are
read: copies whose md5 sums differ from the official archive (e.g. without ``filenames``) load unchanged.

The pickles are read by an unpickler that only builds numpy arrays and plain containers: a data file
cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .in_memory import InMemorySplit, check_labels

# What a CIFAR pickle legitimately refers to: numpy's array reconstruction, and _codecs.encode, which
# Python 3 writes for byte strings in protocol-2 pickles.
_ALLOWED_GLOBALS = {
    (m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not part of a CIFAR batch)")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core") :]  # numpy 2 moved it; the old name warns
        return super().find_class(module, name)


def load_pickle(path: Path, what: str) -> dict[str, object]:
    """The dict in a CIFAR pickle, with str keys; ``DataError`` naming the file for anything else."""
    fetch = f"spikemlp data download {'cifar100' if path.name in ('train', 'test', 'meta') else 'cifar10'}"
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(
            f"{path}: file not found; expected {what}. Re-extract the archive or fetch it: {fetch}"
        ) from None
    except Exception as err:  # pickle reports corruption as many different exception types
        reason = str(err).splitlines()[0] if str(err) else ""  # some span lines; the first says enough
        raise DataError(
            f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {reason}); expected {what}. "
            f"The file is truncated or in another format: replace it with the original ({fetch})."
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, expected {what} (a dict). Replace the file.")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _get(d: dict[str, object], key: str, path: Path, what: str) -> object:
    if key not in d:
        raise DataError(
            f"{path}: key {key!r} missing (found {sorted(d)}); expected {what}. "
            "Replace the file with the original."
        )
    return d[key]


def _names(d: dict[str, object], key: str, path: Path) -> list[str]:
    names = _get(d, key, path, f"the class names under {key!r}")
    if not isinstance(names, list | tuple) or not names:
        raise DataError(f"{path}: {key!r} should be a non-empty list of class names. Replace the file.")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _read_batch(path: Path, label_keys: tuple[str, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
    what = f"a CIFAR batch (dict with 'data' uint8 [N, 3072] and {' and '.join(map(repr, label_keys))})"
    d = load_pickle(path, what)
    data = _get(d, "data", path, what)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(
            f"{path}: 'data' is {desc}, expected uint8 [N, 3072]. Replace the file with the original."
        )
    labels = []
    for key in label_keys:
        lab = _get(d, key, path, what)
        try:
            arr = np.asarray(lab, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as err:
            raise DataError(f"{path}: {key!r} is not a list of integers ({err}). Replace the file.") from None
        if arr.shape[0] != data.shape[0]:
            raise DataError(
                f"{path}: {data.shape[0]} images but {arr.shape[0]} {key!r}; expected one label per image. "
                "The file is damaged: replace it with the original."
            )
        labels.append(arr)
    return data, labels


def _assemble(
    paths: list[Path], label_keys: tuple[str, ...], class_lists: list[list[str]]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    parts = [_read_batch(p, label_keys) for p in paths]
    # concatenate copies into one fresh, writable array even for a single batch (pickled arrays may be
    # read-only views of the pickle's bytes).
    data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = []
    for j, classes in enumerate(class_lists):
        lab = torch.from_numpy(np.concatenate([p[1][j] for p in parts]))
        for p, part in zip(paths, parts, strict=True):
            check_labels(torch.from_numpy(part[1][j]), len(classes), p, what=label_keys[j])
        labels.append(lab)
    return torch.from_numpy(data), labels


def read_cifar10(folder: str | Path, split: str) -> InMemorySplit:
    """CIFAR-10 ``split`` ('train': data_batch_1..5, 'test': test_batch) from ``cifar-10-batches-py/``."""
    folder = Path(folder)
    meta = load_pickle(folder / "batches.meta", "CIFAR-10 metadata (dict with 'label_names')")
    classes = _names(meta, "label_names", folder / "batches.meta")
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, (labels,) = _assemble([folder / f for f in files], ("labels",), [classes])
    return InMemorySplit(images, labels, classes, name="cifar10", split=split, source=str(folder))


def read_cifar100(folder: str | Path, split: str) -> InMemorySplit:
    """CIFAR-100 ``split`` ('train' or 'test') from ``cifar-100-python/``, with the 100 fine labels as
    ``labels`` and the 20 superclasses as ``coarse_labels``; names from ``meta``."""
    folder = Path(folder)
    meta = load_pickle(
        folder / "meta", "CIFAR-100 metadata (dict with 'fine_label_names', 'coarse_label_names')"
    )
    fine = _names(meta, "fine_label_names", folder / "meta")
    coarse = _names(meta, "coarse_label_names", folder / "meta")
    images, (labels, coarse_labels) = _assemble(
        [folder / ("train" if split == "train" else "test")], ("fine_labels", "coarse_labels"), [fine, coarse]
    )
    return InMemorySplit(
        images,
        labels,
        fine,
        name="cifar100",
        split=split,
        source=str(folder),
        coarse_labels=coarse_labels,
        coarse_classes=coarse,
    )
