"""Checkpoints of ``spikemlp train``: a folder per checkpoint (``RUN_DIR/last``, ``RUN_DIR/best``) written
atomically, read without unpickling. Training writes them; evaluation, analysis and export read them
(``spikemlp.models.from_checkpoint`` rebuilds the model), so this module depends on neither side.

A checkpoint folder holds ``model.safetensors`` (the weights, with the run's configuration, number of
classes and class names in the file's metadata: :func:`model_metadata`, so the weights alone rebuild the
model), ``ema.safetensors`` when the run keeps an EMA, ``state.pt`` (what a resume needs: plain tensors,
numbers, strings, lists and dicts, loaded with ``torch.load(weights_only=True)``, which refuses any other
object) and ``meta.json`` (epoch, step and accuracy, for people and scripts).

Writing: the folder is first written in full as ``NAME.tmp-PID`` (each file through
:func:`spikemlp._files.atomic_write`, flushed to the disk); then the old folder is renamed to ``NAME.old``,
the new one to ``NAME``, and ``NAME.old`` is removed. A crash at any moment leaves either ``NAME`` or
(between the two renames) ``NAME.old`` complete; :func:`resolve` picks whichever exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ._files import atomic_write
from .convert.reader import TORCH_SUFFIXES, refused_object

FORMAT = "spikemlp-checkpoint-1"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, or holds something other than tensors and plain data."""


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some platforms have no directory handles
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write(path: Path, write: Callable[[str], None]) -> None:
    """One file of a checkpoint, written by the atomic-write helper and flushed to the disk before it is
    renamed into place (so that a power cut cannot leave a complete-looking folder of empty files)."""

    def write_and_sync(tmp: str) -> None:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())

    atomic_write(path, write_and_sync, suffix=path.suffix)


def model_metadata(config: Mapping[str, Any], num_classes: int, classes: list[str]) -> dict[str, str]:
    """What a weights file carries to rebuild its model and its evaluation: the run's configuration (the
    training configuration as a dict), the number of classes and their names."""
    return {
        "format": FORMAT,
        "model": str(config["model"]),
        "num_classes": str(num_classes),
        "classes": json.dumps(classes),
        "config": json.dumps(dict(config)),
    }


def run_config(meta: Mapping[str, str], path: str | Path) -> dict[str, Any]:
    """The run's configuration in the metadata ``meta`` of the weights at ``path``."""
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(
            f"{path} is not a spikemlp training checkpoint (its weights file has no model metadata); "
            "to load raw weights use timm.create_model(...).load_state_dict(safetensors.torch.load_file(...))"
        )
    return json.loads(meta["config"])


def evaluation_weights(path: str | Path) -> Path:
    """``path``, or its ``best/`` checkpoint when ``path`` is a run folder: the weights to evaluate."""
    path = Path(path)
    if path.is_dir() and not (path / MODEL_FILE).exists() and (path / "best").exists():
        return path / "best"
    return path


def plain_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict as independent, contiguous CPU tensors (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in module.state_dict().items()}


def _refuse_non_finite(folder: Path, *states: dict[str, torch.Tensor]) -> None:
    bad = [k for st in states for k, v in st.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"refusing to write {folder}: {len(bad)} tensor(s) hold NaN or infinity ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); the checkpoint there stays as it was"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return True


def _remove_stale_tmp(folder: Path) -> None:
    """Remove the ``NAME.tmp-PID`` folders left by writers that died (or by this one): never a live one's."""
    for tmp in folder.parent.glob(f"{folder.name}.tmp-*"):
        pid = tmp.name.rpartition("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid() or not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def save_checkpoint(
    folder: str | Path,
    model_state: dict[str, torch.Tensor],
    model_meta: dict[str, str],
    state: dict[str, Any] | None = None,
    ema_state: dict[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (see the module docstring) and return its path. Weights that
    are not finite are refused (CheckpointError): the folder's last good checkpoint stays."""
    folder = Path(folder)
    _refuse_non_finite(folder, model_state, ema_state or {})
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")  # each writer its own
    old = folder.with_name(folder.name + ".old")
    _remove_stale_tmp(folder)
    tmp.mkdir(parents=True)
    metadata = {k: str(v) for k, v in model_meta.items()}
    _write(tmp / MODEL_FILE, lambda f: save_file(model_state, f, metadata=metadata))
    if ema_state is not None:
        _write(tmp / EMA_FILE, lambda f: save_file(ema_state, f, metadata=metadata))
    if state is not None:
        _write(tmp / STATE_FILE, lambda f: torch.save(state, f))
    text = json.dumps(meta or {}, indent=1, default=str)
    _write(tmp / META_FILE, lambda f: Path(f).write_text(text))
    _fsync_dir(tmp)
    # The new folder is complete; swap it in. Between the two renames only NAME.old exists (resolve() knows).
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
    os.replace(tmp, folder)
    _fsync_dir(folder.parent)
    if old.exists():
        shutil.rmtree(old)
    return folder


def resolve(path: str | Path) -> Path:
    """The checkpoint folder for ``path``: a checkpoint folder, a run folder (its ``last``), or a weights
    file's folder; falls back to ``NAME.old`` when a crash interrupted the swap."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return path.parent
    if path.is_dir() and (path / MODEL_FILE).is_file():
        return path
    old = path.with_name(path.name + ".old")
    if not path.exists() and (old / MODEL_FILE).is_file():
        return old
    if (path / "last").exists() or (path / "last.old").exists():
        return resolve(path / "last")
    raise CheckpointError(
        f"no checkpoint at {path}: expected a run folder (with last/ or best/ inside) or a checkpoint folder "
        f"holding {MODEL_FILE}"
    )


def load_weights(path: str | Path, ema: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The weights and their metadata (model name, arguments) from a checkpoint folder or weights file."""
    path = Path(path)
    file = path if path.is_file() else resolve(path) / (EMA_FILE if ema else MODEL_FILE)
    if not file.is_file():
        raise CheckpointError(f"checkpoint weights {file} not found")
    if file.suffix in TORCH_SUFFIXES:  # a PyTorch state dict (the authors' weights), not damaged
        raise CheckpointError(
            f"{file} holds plain PyTorch weights, not a checkpoint written by spikemlp train: name the "
            "model they are for with --model NAME (and the data set with --data), or convert them with "
            "spikemlp convert"
        )
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(file)), meta
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"checkpoint weights {file} are unreadable ({err}); the file is damaged"
        ) from None


def load_state(folder: str | Path) -> dict[str, Any]:
    """The resume state of a checkpoint folder, read with ``weights_only=True`` (never unpickles code)."""
    file = resolve(folder) / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file.parent} has no {STATE_FILE}; it cannot be resumed from")
    if not zipfile.is_zipfile(file):
        raise CheckpointError(
            f"checkpoint state {file} is unreadable (not a torch.save archive); the file is damaged"
        )
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {file}: it holds objects other than tensors and plain data "
            f"({refused_object(err)}). "
            "spikemlp never unpickles arbitrary objects; only load checkpoints you wrote yourself."
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"checkpoint state {file} is unreadable ({err}); the file is damaged") from None


def load_meta(folder: str | Path) -> dict[str, Any]:
    file = resolve(folder) / META_FILE
    return json.loads(file.read_text()) if file.is_file() else {}
