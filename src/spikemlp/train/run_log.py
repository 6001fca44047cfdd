"""The run log: console lines, ``metrics.csv`` (one row per epoch) and TensorBoard, written by rank 0.

Other ranks get a silent log, so the training loop calls it the same way on every rank.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from .evaluate import EvalResult

METRIC_COLUMNS = (
    "epoch step lr train_loss train_top1 test_top1 test_top5 test_loss test_top1_single_view ema_top1 "
    "epoch_seconds images_per_second wall_minutes"
).split()


@dataclass
class EpochRecord:
    """What the log shows of one epoch (``epoch`` counts from 1; ``epochs`` is the current plan)."""

    epoch: int
    epochs: int
    step: int
    lr: float
    train_loss: float
    train_top1: float
    seconds: float
    images_per_second: float
    wall_seconds: float
    best_top1: float
    tta: str
    test: EvalResult | None = None
    ema: EvalResult | None = None


class RunLog:
    """Rank-0 outputs of the run in ``run_dir`` (``active`` false: a silent stand-in). A run resumed at
    ``start_epoch`` keeps the CSV rows of the epochs before it."""

    def __init__(self, run_dir: Path, active: bool, start_epoch: int = 0, progress: bool = False) -> None:
        self.active, self.progress, self.tb = active, progress and active, None
        if not active:
            return
        self.csv_path = run_dir / "metrics.csv"
        rows = []
        if self.csv_path.exists() and start_epoch > 0:
            with open(self.csv_path, newline="") as f:
                # a resumed run redoes the epoch it was killed in: drop rows from that epoch on
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= start_epoch]
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_dir))
        except ImportError:  # an optional extra: the run goes on with metrics.csv, said once
            self.print(
                "note: tensorboard is not installed; metrics go to metrics.csv only "
                "(for TensorBoard logs: pip install 'spikemlp[tensorboard]')"
            )

    def print(self, msg: str) -> None:
        if self.active:
            from tqdm import tqdm

            # tqdm.write clears an open progress bar, prints the line and redraws the bar below it
            tqdm.write(msg, file=sys.stdout)
            sys.stdout.flush()

    def progress_bar(self, total: int, initial: int, desc: str):
        """A progress display for one epoch's batches (``spikemlp.progress``), or None when there is none."""
        if not self.progress:
            return None
        from ..progress import bar

        return bar(total, desc, initial=initial)

    def scalars(self, step: int, **values: float | None) -> None:
        if self.tb is not None:
            for k, v in values.items():
                if v is not None and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def epoch(self, r: EpochRecord) -> None:
        """The epoch's CSV row, TensorBoard points and console line."""
        test, ema = r.test, r.ema
        single = test.top1_single_view if test is not None else None
        top1, top5, loss = (test.top1, test.top5, test.loss) if test else (None, None, None)
        ema_top1 = ema.top1 if ema else None
        if self.active:  # the values of METRIC_COLUMNS, in order; an empty cell where there is none
            row = [r.epoch, r.step, r.lr, r.train_loss, r.train_top1, top1, top5, loss, single, ema_top1]
            row += [r.seconds, r.images_per_second, r.wall_seconds / 60]
            with open(self.csv_path, "a", newline="") as f:
                csv.writer(f).writerow(
                    ["" if v is None else f"{v:.6g}" if isinstance(v, float) else v for v in row]
                )
        self.scalars(
            r.epoch,
            **{
                "epoch/train_loss": r.train_loss,
                "epoch/train_top1": r.train_top1,
                "epoch/images_per_second": r.images_per_second,
                "epoch/lr": r.lr,
                "test/top1": top1,
                "test/top5": top5,
                "test/loss": loss,
                "test/ema_top1": ema_top1,
            },
        )
        test_txt = f"  test {test.top1:.2f}% (top-5 {test.top5:.2f}%)" if test else ""
        if single is not None:
            test_txt += f" [{r.tta}; one view {single:.2f}%]"
        ema_txt = f"  ema {ema.top1:.2f}%" if ema else ""
        best = f", best {r.best_top1:.2f}%]" if r.best_top1 >= 0 else "]"
        self.print(
            f"epoch {r.epoch}/{r.epochs}  step {r.step}  loss {r.train_loss:.4f}  train {r.train_top1:.2f}%"
            f"{test_txt}{ema_txt}  lr {r.lr:.3g}  {r.images_per_second:.0f} img/s  {r.seconds:.1f} s"
            f"  [{r.wall_seconds / 60:.1f} min{best}"
        )

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
