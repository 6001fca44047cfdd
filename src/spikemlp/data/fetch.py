"""``--download``: fetch a data set's official files into the data directory and unpack them.

Downloads are written atomically (``spikemlp._files``), so an interrupted download never looks like data.
The md5 of each file is compared with the official sum and reported; a difference is shown, not fatal (a
broken download still fails clearly when the archive is unpacked or read). Without internet the error
says so plainly.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from .._files import atomic_write
from .errors import DataError
from .info import Download, get_info
from .locations import download_dir, find_data_dir

# The opener used for every request; a module attribute so that tests can replace it (no real network).
_urlopen = urllib.request.urlopen
_CHUNK = 1 << 20


def md5_of(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, tmp: str, timeout: float, h) -> None:
    with _urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        for block in iter(lambda: response.read(_CHUNK), b""):
            out.write(block)
            h.update(block)


def _fetch(item: Download, dest: Path, timeout: float, log: Callable[[str], None]) -> Path:
    """Download ``item`` to ``dest`` (tried mirror by mirror); returns ``dest``."""
    errors = []
    for url in item.urls:
        h = hashlib.md5()
        try:
            log(f"downloading {url}")
            atomic_write(dest, lambda tmp, url=url, h=h: _download(url, tmp, timeout, h), suffix=".part")
        except (http.client.HTTPException, OSError) as err:  # URLError, timeouts, refused connections
            reason = getattr(err, "reason", None) or err
            errors.append(f"{url}: {reason}")
            continue
        digest = h.hexdigest()
        if digest == item.md5:
            log(f"{dest.name}: md5 {digest} matches the official sum")
        else:
            log(
                f"{dest.name}: md5 {digest} differs from the official {item.md5} "
                "(kept; check the file if it fails to read)"
            )
        return dest
    raise DataError(
        f"could not download {item.filename}; this machine seems to have no internet access (or the server "
        f"is unreachable): {'; '.join(errors)}. Download {item.urls[0]} elsewhere and put it "
        f"(or its unpacked contents) in {dest.parent}, or pass --data-dir to where the data already is."
    )


def _unpack(archive: Path, kind: str, into: Path) -> None:
    try:
        if kind == "tar.gz":
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(into, filter="data")  # "data" refuses absolute paths and links outside `into`
        else:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(into)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise DataError(
            f"{archive}: cannot unpack ({err}); the download is incomplete or corrupt. Delete it and retry."
        ) from None


def download(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    timeout: float = 30.0,
    log: Callable[[str], None] = print,
) -> Path:
    """Fetch data set ``name`` into ``data_dir`` (default: the first ``$SPIKEMLP_DATA`` entry, else
    ``~/.cache/spikemlp``) and return its folder. Data already there is not fetched again."""
    info = get_info(name)
    if not info.downloads:
        raise DataError(
            f"{info.name} cannot be downloaded automatically (it needs registration at {info.homepage}). "
            f"Put it under --data-dir DIR as {info.folders[0]}/ with {info.layout}."
        )
    root = download_dir(data_dir)
    with contextlib.suppress(DataError):  # already there
        return find_data_dir(info.name, root)
    folder = root / info.folders[0]
    made_folder = not info.downloads[0].archive and not folder.exists()
    try:
        (root if info.downloads[0].archive else folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"{root}: cannot create the data directory ({err}); pass a writable --data-dir."
        ) from None
    try:
        for item in info.downloads:
            if item.archive:
                archive = root / item.filename
                if not (archive.is_file() and md5_of(archive) == item.md5):
                    _fetch(item, archive, timeout, log)
                log(f"unpacking {archive.name} into {root}")
                _unpack(archive, item.archive, root)
                archive.unlink()
            else:
                target = folder / item.filename
                if not (target.is_file() and md5_of(target) == item.md5):
                    _fetch(item, target, timeout, log)
    except DataError:
        # An empty folder left by a failed first download would later read as an incomplete data set.
        if made_folder and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return find_data_dir(info.name, root)
