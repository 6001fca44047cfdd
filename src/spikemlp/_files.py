"""Atomic file writing: a reader (or a crash) never sees a half-written file.

Every output the library writes (reports, converted weights, exported graphs, compiled kernels) goes to a
temporary file beside its target and is renamed over it once complete; the rename is atomic on POSIX file
systems, so the target is either the old file or the new one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text"]


def _public_permissions(path: str) -> None:
    # mkstemp makes the file private (0600); an output file gets the usual permissions of the umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it to ``path``.

    The folder is created if needed. If ``write`` raises, the temporary file is removed and ``path`` is
    left as it was. ``suffix`` ends the temporary name (some writers pick the format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        _public_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
