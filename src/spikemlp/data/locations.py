"""Where data sets are found: the ``--data-dir`` flag, else ``$SPIKEMLP_DATA``, else standard places.

The standard places, in order: ``./data``, ``~/.cache/spikemlp``, ``/usr/share/datasets`` (where Debian's
``dataset-fashion-mnist`` package installs ``fashion-mnist/``) and ``../shared/data`` when it exists
(a data folder kept beside a checkout). Each data set has a folder name inside these directories
(``cifar-10-batches-py``, ``fashion-mnist``, ...; see ``DATASET_INFO[name].folders``).

An explicit ``--data-dir`` is searched alone: when the user names a directory, finding another copy
elsewhere would hide their mistake. It may be the data set's own folder or a directory holding it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError
from .info import DatasetInfo, check_split, get_info

ENV_VAR = "SPIKEMLP_DATA"
# Module attribute (not inlined) so that tests can point it elsewhere.
SYSTEM_DATA_DIR = Path("/usr/share/datasets")


def search_locations(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The directories searched for data, in the order of the module docstring, each with the name a user
    knows it by; ``$SPIKEMLP_DATA`` may hold several, separated by ``os.pathsep``."""
    if data_dir is not None:
        return [("--data-dir", Path(data_dir).expanduser())]
    places: list[tuple[str, Path]] = []
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if entry.strip():
            places.append((f"${ENV_VAR}", Path(entry.strip()).expanduser()))
    places.append(("./data", Path.cwd() / "data"))
    places.append(("~/.cache/spikemlp", default_cache_dir()))
    places.append((str(SYSTEM_DATA_DIR), SYSTEM_DATA_DIR))
    shared = Path.cwd().parent / "shared" / "data"
    if shared.is_dir():
        places.append(("../shared/data", shared))
    return places


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "spikemlp"


def download_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where ``--download`` puts data: ``data_dir``, else the first ``$SPIKEMLP_DATA`` entry, else
    ``~/.cache/spikemlp`` (a per-user cache rather than the current directory)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if entry.strip():
            return Path(entry.strip()).expanduser()
    return default_cache_dir()


def required_files(info: DatasetInfo, split: str | None = None) -> list[str]:
    """Files (or folders, ending in '/') that must exist in the data set's folder for ``split`` (both
    splits when None). Idx files count as present when either the ``.gz`` or the plain file exists."""
    splits = [check_split(split)] if split else ["train", "test"]
    if info.in_memory:
        return list(dict.fromkeys(f for s in splits for f in info.split_files[s]))  # each file once
    if info.name == "tiny_imagenet":
        tiny = {"train": ["train/"], "test": ["val/images/", "val/val_annotations.txt"]}
        return ["wnids.txt"] + [f for s in splits for f in tiny[s]]
    return [{"train": "train/", "test": "val/"}[s] for s in splits]


def _present(folder: Path, name: str) -> bool:
    if name.endswith("/"):
        return (folder / name).is_dir()
    if name.endswith(".gz"):
        return (folder / name).is_file() or (folder / name[: -len(".gz")]).is_file()
    return (folder / name).is_file()


def missing_files(info: DatasetInfo, folder: Path, split: str | None = None) -> list[str]:
    return [n for n in required_files(info, split) if not _present(folder, n)]


def _looks_like(info: DatasetInfo, folder: Path) -> bool:
    """Whether ``folder`` itself is the data set's folder (holds at least one of its files)."""
    return any(_present(folder, n) for n in required_files(info))


def find_data_dir(name: str, data_dir: str | os.PathLike | None = None, split: str | None = None) -> Path:
    """The folder holding data set ``name`` (e.g. ``.../cifar-10-batches-py``): the first of its folders in
    ``search_locations``, which must hold the files ``split`` needs (all splits when None). ``DataError``
    names every place searched when there is none, or the missing files when the folder is incomplete."""
    info = get_info(name)
    places = search_locations(data_dir)
    for _, base in places:
        candidates = [base / f for f in info.folders]
        if data_dir is not None and _looks_like(info, base):
            candidates.insert(0, base)
        for folder in candidates:
            if folder.is_dir():
                missing = missing_files(info, folder, split)
                if missing:
                    raise DataError(
                        f"{info.name}: the folder {folder} is incomplete: missing {', '.join(missing)}. "
                        f"Expected {info.layout}. Complete it (re-extract the archive"
                        + (f", or fetch it: spikemlp data download {info.name}" if info.downloads else "")
                        + "), or pass --data-dir to a complete copy."
                    )
                return folder
    raise DataError(not_found_message(info, places))


def not_found_message(info: DatasetInfo, places: list[tuple[str, Path]]) -> str:
    folders = " or ".join(info.folders)
    lines = [f"{info.name} not found. Looked for a folder named {folders} holding {info.layout} in:"]
    for label, path in places:
        lines.append(f"  {label}: {path}" + ("" if path.is_dir() else " (does not exist)"))
    where = f"pass --data-dir DIR (or set ${ENV_VAR}) to where it is"
    if info.downloads:
        lines.append(
            f"Put the data in one of these places, {where}, or fetch it: spikemlp data download {info.name} "
            f"(from {info.downloads[0].urls[0]})."
        )
    else:
        lines.append(
            f"Put the data in one of these places, or {where}; it cannot be downloaded automatically "
            f"(get it from {info.homepage})."
        )
    return "\n".join(lines)
