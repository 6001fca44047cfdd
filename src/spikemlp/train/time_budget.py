"""The time budget of a run (``time_budget``, minutes): every decision it makes, in one object.

Once the pace is known (a few steps skipped: they compile and warm caches; the next ones timed), the
steps that fit in what is left, after room for the final evaluation and the last checkpoints, become the
new end of the cosine schedule. Each epoch end refreshes the fit with that epoch's pace (evaluation and
checkpoints included); a hard deadline (:meth:`TimeBudget.out_of_time`) stops the run cleanly if the
machine slows down. Without a budget the object only keeps the wall clock.

Decisions depend on step counts only, never on each rank's clock or on other processes, so every rank
reaches the same decision points together; the training loop broadcasts rank 0's numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

SKIP_STEPS = 3  # steps before the pace is measured (compilation, warm-up)
MEASURE_STEPS = 20  # steps timed for the first fit (or fewer, when the epoch ends first)
FIT_MARGIN = 0.98  # the fitted steps fill this share of the time left
EVAL_MARGIN = 1.15  # a measured evaluation is assumed to take this much longer next time
# Before any evaluation is measured, a forward pass is assumed to cost half a training step per image
# (it costs about a third; the rest is margin).
EVAL_SHARE_OF_STEP = 0.5


def resumed_minutes(
    saved: float | None, given: float | None, elapsed_before: float
) -> tuple[float | None, bool]:
    """(the whole run's budget in minutes, whether to fit it afresh) for a run resumed with ``given``
    minutes (the configuration's) after ``elapsed_before`` seconds, whose budget was ``saved``. A budget
    other than the run's own is that many more minutes from now (``--resume RUN --time-budget 10``)."""
    if given is None or given == saved:
        return given, False
    return elapsed_before / 60.0 + given, True


def resume_overrides(saved: dict, overrides: dict) -> tuple[dict, str | None]:
    """The overrides of ``--resume`` with what they mean for the budget, and a note to print: ``--epochs``
    alone on a budgeted run lifts the budget, so that the run trains to that many epochs."""
    if "epochs" in overrides and saved.get("time_budget") and "time_budget" not in overrides:
        note = (
            f"note: --epochs {overrides['epochs']} on a run with a time budget of "
            f"{saved['time_budget']:g} min: the budget is lifted and the run trains to that many epochs "
            "(--time-budget M instead gives it M more minutes)"
        )
        return {**overrides, "time_budget": None}, note
    return overrides, None


def eval_passes(tta: str, ema: bool) -> int:
    """Forward passes per test image of one evaluation: the mirror image's too with flip test-time
    augmentation, all of them again for the EMA weights."""
    return (2 if tta == "hflip" else 1) * (2 if ema else 1)


@dataclass(kw_only=True)
class TimeBudget:
    """Wall clock and step plan of a run under ``minutes`` of budget (``None``: no budget)."""

    minutes: float | None = field(kw_only=False)
    max_steps: int  # the steps the recipe's epochs ask for (the budget never plans more)
    updates_per_epoch: int
    images_per_step: int  # images one process sees per optimizer step (batch size x accumulation)
    eval_images: int  # images one process evaluates in one evaluation
    eval_every: int = 1
    # forward passes per image of one evaluation: 2 with flip test-time augmentation, twice that with EMA
    eval_passes: int = 1
    elapsed_before: float = 0.0  # seconds the run took before a resume
    fitted: bool = False  # the step count is fitted already (a resumed run's; refreshed at epoch ends)
    clock: Callable[[], float] = time.perf_counter  # seconds
    started_at: float | None = None  # the clock when this process's share of the run began (None: now)
    # measured as the run goes
    eval_seconds: float | None = None  # the last evaluation's, once one has run
    eval_overhead_per_epoch: float = 0.0
    sec_per_step: float | None = None  # training pace, from the first fit
    sec_per_image: float | None = None
    save_seconds: float = 0.0  # the last checkpoint write's (the end keeps room for two)
    _measure_from: tuple[float, int] | None = None

    def __post_init__(self) -> None:
        self.seconds = self.minutes * 60.0 if self.minutes else None
        if self.started_at is None:
            self.started_at = self.clock()

    @property
    def enabled(self) -> bool:
        return self.seconds is not None

    def elapsed(self) -> float:
        """Seconds of the whole run so far, the part before a resume included."""
        return self.elapsed_before + self.clock() - self.started_at

    def resumed_total(self, saved_total: int, step: int) -> int:
        """The step plan of a run resumed at ``step`` that had planned ``saved_total`` steps: a budget
        keeps its fit (a new budget plans the recipe's steps until it fits them afresh); otherwise a
        changed number of epochs moves the end (unless already passed)."""
        if (self.enabled and self.fitted) or saved_total == self.max_steps or step >= self.max_steps:
            return saved_total
        return self.max_steps

    def eval_reserve(self) -> float:
        """Seconds to keep for the final evaluation, the checkpoints written at the end and the summary:
        measured once an evaluation has run, else estimated from the training pace."""
        extra = 2 * self.save_seconds + 1.0
        if self.eval_seconds is not None:
            return self.eval_seconds * EVAL_MARGIN + extra
        if self.sec_per_image is not None:
            return self.estimated_eval_seconds() + extra
        return 0.0

    def estimated_eval_seconds(self) -> float:
        """One evaluation's seconds before any is measured: its forward passes at the training pace."""
        return self.eval_images * self.eval_passes * self.sec_per_image * EVAL_SHARE_OF_STEP

    def fit_steps(self, step: int, sec_per_step: float) -> int:
        """The total steps that fit in the rest of the budget at ``sec_per_step``, counted from ``step``
        (at least one more, at most ``max_steps``)."""
        remaining = self.seconds - self.elapsed() - self.eval_reserve()
        per_step = sec_per_step + self.eval_overhead_per_epoch / self.updates_per_epoch
        return min(step + max(1, int(remaining * FIT_MARGIN / per_step)), self.max_steps)

    def after_step(self, step: int, epoch_over: bool) -> int | None:
        """Called after every optimizer step: the first fitted total when it is due (after
        ``MEASURE_STEPS`` timed steps, or at the end of the epoch), else None."""
        if not self.enabled or self.fitted:
            return None
        if self._measure_from is None:
            if step >= SKIP_STEPS:
                self._measure_from = (self.clock(), step)
            return None
        start, first = self._measure_from
        if step - first < MEASURE_STEPS and not epoch_over:
            return None
        rate = (self.clock() - start) / (step - first)
        self.sec_per_step, self.sec_per_image = rate, rate / self.images_per_step
        if self.eval_seconds is None:  # no evaluation measured yet: estimate its share
            self.eval_overhead_per_epoch = self.estimated_eval_seconds() / self.eval_every
        self.fitted = True
        return self.fit_steps(step, rate)

    def out_of_time(self) -> bool:
        """True once the final evaluation would no longer fit: the run must stop now."""
        return self.enabled and self.elapsed() + self.eval_reserve() >= self.seconds

    def evaluated(self, seconds: float) -> None:
        """Record how long an evaluation (model and EMA together) took."""
        self.eval_seconds = seconds
        self.eval_overhead_per_epoch = seconds / self.eval_every

    def saved(self, seconds: float) -> None:
        """Record how long a checkpoint write took."""
        self.save_seconds = seconds

    def after_epoch(self, step: int, seconds: float, updates: int) -> int | None:
        """The refreshed total at the end of a whole epoch that took ``seconds`` for ``updates`` steps
        (evaluation and checkpoint included), once the first fit is done; else None."""
        if not (self.enabled and self.fitted):
            return None
        return self.fit_steps(step, seconds / max(1, updates))

    def cut_short(self, step: int) -> bool:
        """Whether a run that ends at ``step`` was shortened by the budget."""
        return self.enabled and step < self.max_steps
