"""What ``--resume`` may not change, checked before anything is loaded or written: the number of processes
(each one's random streams are in the checkpoint, and the global batch would change) and, in the middle of
an epoch, the batch (the epoch's remaining batches are counted in batches of the old size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt
from . import run_folder


def check_resumable(run_dir: Path) -> None:
    """ValueError (one line) for a run folder without a checkpoint to resume from (a run that stopped, or
    is still running, before its first checkpoint: the lock names a live one's pid)."""
    if not any((run_dir / name).exists() for name in ("last", "last.old")):
        with run_folder.locked(run_dir):
            pass
        raise ValueError(
            f"{run_dir} stopped before its first checkpoint was written, so there is nothing to resume: "
            f"start it again without --resume (with --out {run_dir} --overwrite to reuse the folder)"
        )


def check_resume(saved: dict[str, Any], overrides: dict[str, Any], run_dir: Path) -> None:
    """ValueError (one line, naming what differs) for an override that the run in ``run_dir`` cannot take,
    or for a run that stopped before its first checkpoint (there is nothing to resume: it starts again)."""
    check_resumable(run_dir)
    changed = {k: (saved.get(k), v) for k, v in overrides.items() if k in saved and saved.get(k) != v}
    if "processes" in changed:
        was, now = changed["processes"]
        raise ValueError(
            f"{run_dir} was trained with processes {was}; resuming with {now} would change the global batch "
            f"and the data each process reads: resume with --processes {was}"
        )
    mid_epoch = ckpt.load_meta(run_dir / "last").get("mid_epoch", False)
    for key in ("batch_size", "accum_steps"):
        if key in changed and mid_epoch:
            was, now = changed[key]
            raise ValueError(
                f"{run_dir}'s checkpoint is in the middle of an epoch, counted in batches of {key} {was}; "
                f"resume with {key} {was} (it may change at an epoch boundary), not {now}"
            )
