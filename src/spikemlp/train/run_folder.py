"""One writer per run folder: an exclusive lock held for the run's life, and no silent reuse of a folder
that already holds a run.

The lock is ``flock`` on ``RUN_DIR/.spikemlp.lock`` (the holder's pid written inside, for the message).
The kernel drops it when its holder dies, even by ``kill -9``, so a crashed run never leaves the folder
locked. ``spikemlp train`` with ``processes`` > 1 takes it in the launcher; its workers see
``LOCK_ENV`` naming the folder and do not take it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from ..errors import UserError

LOCK_FILE = ".spikemlp.lock"
LOCK_ENV = "SPIKEMLP_RUN_LOCK"  # the folder whose lock this process's launcher holds
# what a run writes into its folder (``--overwrite`` removes them)
ARTEFACTS = ("config.yaml", "metrics.csv", "summary.json", "last*", "best*", "events.out.tfevents.*")


def artefacts(run_dir: Path) -> list[Path]:
    return sorted(p for pattern in ARTEFACTS for p in run_dir.glob(pattern)) if run_dir.is_dir() else []


def check_reuse(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """ValueError for a fresh run into a folder that holds any run artefact, unless ``overwrite``."""
    found = artefacts(run_dir)
    if resume or overwrite or not found:
        return
    hint = (
        f"continue it with --resume {run_dir}"
        if any(p.name.startswith("last") for p in found)
        else ("its last/ checkpoint is gone, so it cannot be resumed")
    )
    raise ValueError(
        f"{run_dir} already holds a training run; {hint}, choose another --out, or replace it with "
        f"--overwrite (found {', '.join(p.name for p in found[:4])})"
    )


def clear(run_dir: Path) -> None:
    """Remove the artefacts of an earlier run (``--overwrite``), under the lock."""
    for path in artefacts(run_dir):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@contextlib.contextmanager
def locked(run_dir: Path):
    """Hold ``run_dir``'s lock inside the block (created with the folder); UserError naming the holder's pid
    when another process holds it. Re-entrant for the workers of the launcher that holds it. Yields the
    lock's file descriptor (None when re-entered): a child given it holds the lock until it exits too."""
    key = str(run_dir.resolve())
    if os.environ.get(LOCK_ENV) == key or int(os.environ.get("RANK", "0")) != 0:
        yield None  # the launcher holds it (or another rank of an outside torchrun does)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UserError(
                f"{run_dir} is in use by another spikemlp train (pid {holder}); wait for it to end or choose "
                "another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        before, os.environ[LOCK_ENV] = os.environ.get(LOCK_ENV), key
        try:
            yield fd
        finally:
            os.environ.pop(LOCK_ENV) if before is None else os.environ.__setitem__(LOCK_ENV, before)
    finally:
        os.close(fd)  # releases the lock
