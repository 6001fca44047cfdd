"""NaN in training: a batch with NaN pixels stops the run naming the batch, non-finite gradients skip their
step (and stop the run after a few in a row), and no checkpoint is ever written with non-finite weights."""

from __future__ import annotations

import pytest
import torch
import train_tiny_models  # noqa: F401  (registers train_tiny_snn)

from spikemlp import checkpoint as ckpt
from spikemlp.data import loaders
from spikemlp.train import load_state, train
from spikemlp.train.config import from_dict
from spikemlp.train.epoch import EpochRunner
from spikemlp.train.non_finite import MAX_SKIPPED_IN_A_ROW, NonFiniteGradientError, NonFiniteInputError

TINY = dict(
    model="train_tiny_snn", T=2, img_size=8, data="synthetic", synthetic_size=256, batch_size=32, epochs=2,
    opt="adamw", lr=0.02, threads=1, progress=False, crop_padding=0,
)  # fmt: skip


def all_finite(folder) -> bool:
    weights, _ = ckpt.load_weights(folder)
    return all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


class _NaNBatch:
    """A training loader whose batch ``bad`` (counted from 1 over the whole run) holds one NaN pixel."""

    def __init__(self, inner, bad: int) -> None:
        self.inner, self.bad, self.seen = inner, bad, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        for images, labels in self.inner:
            self.seen += 1
            if self.seen == self.bad:
                images = images.float().clone()
                images[0, 0, 0, 0] = float("nan")
            yield images, labels


def test_a_batch_with_a_nan_pixel_stops_the_run_naming_the_batch(tmp_path, monkeypatch):
    build = loaders.build_train_loader
    monkeypatch.setattr(loaders, "build_train_loader", lambda *a: _NaNBatch(build(*a), bad=3))
    run = tmp_path / "run"
    with pytest.raises(
        NonFiniteInputError,
        match=r"training batch 3 of epoch 1 holds NaN or infinite pixels \(step 3\).*kept .*last \(step 2\)",
    ):
        train(from_dict({**TINY, "checkpoint_every_steps": 2}), run)
    assert load_state(run / "last")["counters"]["global_step"] == 2
    assert all_finite(run / "last") and not (run / "best").exists()


def _nan_gradients_at(monkeypatch, steps):
    """Make the gradients NaN before the optimizer steps ``steps`` (counted from 1); record whether each of
    those steps left the parameters as they were."""
    step = EpochRunner._optimizer_step
    unchanged = []

    def with_nan(self):
        if self.state.global_step + 1 in steps:
            before = [p.detach().clone() for p in self.state.model.parameters()]
            for p in self.state.model.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
            step(self)
            unchanged.append(all(torch.equal(a, p) for a, p in zip(before, self.state.model.parameters())))
        else:
            step(self)

    monkeypatch.setattr(EpochRunner, "_optimizer_step", with_nan)
    return unchanged


def test_a_step_with_non_finite_gradients_is_skipped_and_training_goes_on(tmp_path, monkeypatch, capsys):
    unchanged = _nan_gradients_at(monkeypatch, {3})
    result = train(from_dict(TINY), tmp_path / "run")
    assert unchanged == [True]
    assert (
        "gradients were NaN or infinite at step 3 (epoch 1); that update was skipped"
        in capsys.readouterr().out
    )
    assert result.summary["steps"] == 16 and all_finite(tmp_path / "run" / "last")


def test_non_finite_gradients_in_a_row_stop_the_run_with_the_steps_and_the_cause(tmp_path, monkeypatch):
    _nan_gradients_at(monkeypatch, set(range(5, 100)))
    run = tmp_path / "run"
    last = 4 + MAX_SKIPPED_IN_A_ROW
    with pytest.raises(NonFiniteGradientError, match=rf"at steps 5..{last} \(epoch 1\).*exploding gradients"):
        train(from_dict({**TINY, "checkpoint_every_steps": 2}), run)
    assert all_finite(run / "last")


def test_a_checkpoint_with_non_finite_weights_is_refused_and_the_last_good_one_stays(tmp_path):
    folder = tmp_path / "last"
    good = {"w": torch.ones(2), "steps": torch.tensor(3)}
    ckpt.save_checkpoint(folder, good, {"model": "m"}, meta={"global_step": 1})
    for bad in ({"w": torch.tensor([1.0, float("nan")])}, {"w": torch.tensor([float("inf"), 0.0])}):
        with pytest.raises(
            ckpt.CheckpointError, match=r"refusing to write .*last: 1 tensor\(s\) hold NaN.*\(w\)"
        ):
            ckpt.save_checkpoint(folder, {**good, **bad}, {"model": "m"}, meta={"global_step": 2})
    with pytest.raises(ckpt.CheckpointError, match="hold NaN"):  # the EMA weights too
        ckpt.save_checkpoint(folder, good, {"model": "m"}, ema_state={"w": torch.tensor([float("nan")])})
    weights, _ = ckpt.load_weights(folder)
    assert torch.equal(weights["w"], good["w"]) and ckpt.load_meta(folder) == {"global_step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
