"""The time budget's decisions, on a fake clock: when it fits the step count and to what, how much time it
keeps for the final evaluation, when it stops the run, and how a resumed run re-plans."""

from __future__ import annotations

import pytest

from spikemlp.train.time_budget import MEASURE_STEPS, SKIP_STEPS, TimeBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0  # not zero: the budget must count from its start, not from the clock's origin

    def __call__(self) -> float:
        return self.now


def budget(minutes=10.0, clock=None, **kw) -> TimeBudget:
    args = dict(max_steps=10_000, updates_per_epoch=50, images_per_step=10, eval_images=100)
    return TimeBudget(minutes, clock=clock or FakeClock(), **{**args, **kw})


def run_steps(b: TimeBudget, clock: FakeClock, first: int, last: int, sec_per_step: float, epoch_end=None):
    """Advance the clock one step at a time; return {step: fitted total} for the steps that fitted."""
    fits = {}
    for step in range(first, last + 1):
        clock.now += sec_per_step
        fitted = b.after_step(step, epoch_over=step == epoch_end)
        if fitted is not None:
            fits[step] = fitted
    return fits


def test_elapsed_counts_from_the_start_and_adds_the_time_before_a_resume():
    clock = FakeClock()
    b = budget(clock=clock, elapsed_before=30.0)
    clock.now += 12.5
    assert b.elapsed() == pytest.approx(42.5)


def test_the_first_fit_comes_after_the_skipped_and_the_timed_steps():
    clock = FakeClock()
    b = budget(clock=clock)
    fits = run_steps(b, clock, 1, 100, sec_per_step=1.0)
    assert list(fits) == [SKIP_STEPS + MEASURE_STEPS]  # once, at step 23
    # pace 1 s/step, 0.1 s/image; evaluation estimated at 100 images x 0.1 s x 0.5 = 5 s (+1 s summary);
    # per step 1 s + 5 s / 50 steps; (600 - 23 - 6) x 0.98 / 1.1 = 508.7 more steps
    assert fits[23] == 23 + 508
    assert b.sec_per_step == pytest.approx(1.0) and b.eval_reserve() == pytest.approx(6.0)


def test_the_skipped_steps_do_not_count_in_the_pace():
    clock = FakeClock()
    b = budget(clock=clock)
    run_steps(b, clock, 1, SKIP_STEPS, sec_per_step=50.0)  # slow first steps (compilation)
    fits = run_steps(b, clock, SKIP_STEPS + 1, 100, sec_per_step=1.0)
    assert b.sec_per_step == pytest.approx(1.0)
    elapsed = 3 * 50 + 20
    assert fits == {23: 23 + int((600 - elapsed - 6) * 0.98 / 1.1)}


def test_an_epoch_that_ends_before_the_timed_steps_fits_at_its_end():
    clock = FakeClock()
    b = budget(clock=clock, updates_per_epoch=10)
    fits = run_steps(b, clock, 1, 10, sec_per_step=2.0, epoch_end=10)
    assert list(fits) == [10] and b.sec_per_step == pytest.approx(2.0)  # 7 timed steps


def test_the_fit_never_exceeds_the_recipe_and_always_allows_one_more_step():
    clock = FakeClock()
    generous = budget(clock=clock, max_steps=40)
    assert run_steps(generous, clock, 1, 30, sec_per_step=0.01) == {23: 40}
    clock = FakeClock()
    tight = budget(minutes=0.3, clock=clock)  # 18 s: already over after 23 steps of 1 s
    assert run_steps(tight, clock, 1, 30, sec_per_step=1.0) == {23: 24}


def test_a_measured_evaluation_and_checkpoint_write_set_the_reserve():
    b = budget(eval_every=2)
    assert b.eval_reserve() == 0.0  # nothing known yet
    b.evaluated(10.0)
    b.saved(2.0)
    assert b.eval_reserve() == pytest.approx(10.0 * 1.15 + 2 * 2.0 + 1.0)
    assert b.eval_overhead_per_epoch == pytest.approx(5.0)  # one evaluation every two epochs


def test_a_measured_evaluation_is_not_replaced_by_the_estimate():
    clock = FakeClock()
    b = budget(clock=clock)
    b.evaluated(20.0)
    fits = run_steps(b, clock, 1, 23, sec_per_step=1.0)
    # per step 1 s + 20 s / 50; reserve 20 x 1.15 + 1
    assert fits == {23: 23 + int((600 - 23 - 24.0) * 0.98 / 1.4)}


def test_out_of_time_once_the_final_evaluation_would_not_fit():
    clock = FakeClock()
    b = budget(minutes=1.0, clock=clock)
    b.evaluated(10.0)  # reserve 12.5 s
    clock.now += 47.4
    assert not b.out_of_time()
    clock.now += 0.2
    assert b.out_of_time()


def test_the_epoch_end_refreshes_the_fit_with_the_epochs_pace_once_fitted():
    clock = FakeClock()
    b = budget(clock=clock)
    assert b.after_epoch(10, seconds=100.0, updates=50) is None  # no first fit yet
    run_steps(b, clock, 1, 23, sec_per_step=1.0)
    b.evaluated(6.0)
    clock.now = 100.0 + 200.0
    # the epoch's pace: 100 s / 50 steps = 2 s, plus 6 s of evaluation per epoch over 50 steps
    expected = 60 + int((600 - 200 - (6.0 * 1.15 + 1.0)) * 0.98 / (2.0 + 6.0 / 50))
    assert b.after_epoch(60, seconds=100.0, updates=50) == expected


def test_a_resumed_run_keeps_its_fit_and_refreshes_it_at_epoch_ends_only():
    clock = FakeClock()
    b = budget(clock=clock, fitted=True, elapsed_before=300.0)
    assert run_steps(b, clock, 1, 100, sec_per_step=1.0) == {}
    assert b.after_epoch(100, seconds=50.0, updates=50) is not None
    assert b.resumed_total(saved_total=700, step=100) == 700  # the fitted plan, not the recipe's


def test_without_a_budget_a_resumed_run_follows_a_changed_number_of_epochs():
    b = budget(minutes=None, max_steps=500)
    assert b.resumed_total(saved_total=300, step=120) == 500  # --epochs raised on resume
    assert budget(minutes=None, max_steps=200).resumed_total(saved_total=300, step=120) == 200  # lowered
    assert budget(minutes=None, max_steps=100).resumed_total(saved_total=300, step=120) == 300  # passed


def test_without_a_budget_nothing_is_fitted_and_nothing_stops_the_run():
    clock = FakeClock()
    b = budget(minutes=None, clock=clock)
    assert run_steps(b, clock, 1, 100, sec_per_step=100.0, epoch_end=50) == {}
    assert not b.out_of_time() and b.after_epoch(100, 10.0, 50) is None
    assert not b.cut_short(10) and budget(minutes=1).cut_short(10) and not budget(minutes=1).cut_short(10_000)


def test_the_estimated_evaluation_counts_every_forward_pass_of_tta_and_ema():
    clock, flip_clock = FakeClock(), FakeClock()
    plain, flip = budget(clock=clock), budget(clock=flip_clock, eval_passes=2)
    run_steps(plain, clock, 1, SKIP_STEPS + MEASURE_STEPS, sec_per_step=1.0)
    run_steps(flip, flip_clock, 1, SKIP_STEPS + MEASURE_STEPS, sec_per_step=1.0)
    # 100 images at 0.1 s per image, half a step's cost per forward pass: 5 s per pass
    assert plain.eval_reserve() == pytest.approx(5.0 + 1.0) and flip.eval_reserve() == pytest.approx(
        10.0 + 1.0
    )
    assert flip.eval_overhead_per_epoch == pytest.approx(2 * plain.eval_overhead_per_epoch)


def test_flip_tta_and_ema_each_double_the_forward_passes():
    from spikemlp.train.time_budget import eval_passes

    assert [eval_passes("none", False), eval_passes("hflip", False), eval_passes("hflip", True)] == [1, 2, 4]


def test_a_new_budget_on_resume_is_that_many_more_minutes_fitted_afresh():
    from spikemlp.train.time_budget import resumed_minutes

    assert resumed_minutes(20.0, 20.0, 600.0) == (20.0, False)  # the run's own: kept, with its fit
    assert resumed_minutes(20.0, 5.0, 600.0) == (15.0, True)  # 10 min spent + 5 more
    assert resumed_minutes(20.0, None, 600.0) == (None, False)  # lifted
    fresh = budget(max_steps=900, fitted=False)
    assert fresh.resumed_total(300, step=300) == 900  # the recipe's steps, until the new fit
    assert budget(max_steps=900, fitted=True).resumed_total(300, step=300) == 300  # the old fit holds


def test_epochs_alone_on_resume_lifts_the_budget_and_says_so():
    from spikemlp.train.time_budget import resume_overrides

    overrides, note = resume_overrides({"time_budget": 20.0, "epochs": 100}, {"epochs": 150})
    assert overrides == {"epochs": 150, "time_budget": None} and "budget is lifted" in note
    assert resume_overrides({"time_budget": 20.0}, {"epochs": 150, "time_budget": 5})[1] is None
    assert resume_overrides({"time_budget": None}, {"epochs": 150}) == ({"epochs": 150}, None)


def test_resume_with_more_epochs_extends_a_budgeted_run(tmp_path, capsys):
    import json

    from spikemlp.cli import main

    run = tmp_path / "run"
    tiny = [
        "--data",
        "synthetic",
        "--synthetic_size",
        "128",
        "--processes",
        "1",
        "-b",
        "32",
        "--progress",
        "false",
    ]
    assert main(["train", "--out", str(run), "--epochs", "1", "--time-budget", "30", *tiny]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert "the budget is lifted" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2
