"""Resume validates before it writes: a failed ``--resume`` leaves ``config.yaml`` as it was, and a change of
process count, or of the batch in the middle of an epoch, is one line naming what differs."""

from __future__ import annotations

import pytest
import torch
import train_tiny_models  # noqa: F401  (registers train_tiny_snn)

from spikemlp import checkpoint as ckpt
from spikemlp.cli import main as cli_main
from spikemlp.train import NonFiniteLossError, train
from spikemlp.train.config import from_dict

TINY = dict(
    model="train_tiny_snn", T=2, img_size=8, data="synthetic", synthetic_size=128, batch_size=16, epochs=2,
    opt="adamw", lr=0.02, threads=1, progress=False, crop_padding=0, checkpoint_every_steps=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def mid_epoch_run(tmp_path_factory):
    """A run stopped in its first epoch (a NaN loss at step 4) with a mid-epoch checkpoint at step 2."""
    run = tmp_path_factory.mktemp("runs") / "run"
    with pytest.raises(NonFiniteLossError):
        train(from_dict({**TINY, "model_kwargs": {"nan_after": 3}}), run)
    assert ckpt.load_meta(run / "last")["mid_epoch"]
    return run


def refused(capsys, argv, lines: int = 1) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == lines and "Traceback" not in err, err
    return err


def test_a_failed_resume_leaves_config_yaml_unchanged(mid_epoch_run, tmp_path, capsys):
    before = (mid_epoch_run / "config.yaml").read_bytes()
    argv = ["train", "--resume", str(mid_epoch_run), "--data", "cifar10", "--data-dir", str(tmp_path)]
    assert "cifar10 not found" in refused(capsys, argv, lines=3)  # the data layer's message: where it looked
    # a resume that fails after it has started (its first step's loss is NaN), before its first checkpoint
    argv = ["train", "--resume", str(mid_epoch_run), "--model_kwargs.nan_after", "1"]
    assert "loss became nan at step 4" in refused(capsys, argv)
    assert (mid_epoch_run / "config.yaml").read_bytes() == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--processes", "2"], "was trained with processes 1; resuming with 2 .*resume with --processes 1"),
        (["--batch-size", "8"], "in the middle of an epoch, counted in batches of batch_size 16.*not 8"),
        (["--accum-steps", "2"], "counted in batches of accum_steps 1"),
    ],
)
def test_what_a_resume_cannot_change_is_one_line(mid_epoch_run, capsys, extra, message):
    before = (mid_epoch_run / "config.yaml").read_bytes()
    assert __import__("re").search(
        message, refused(capsys, ["train", "--resume", str(mid_epoch_run), *extra])
    )
    assert (mid_epoch_run / "config.yaml").read_bytes() == before


def test_a_checkpoint_of_two_processes_is_not_resumed_by_one(mid_epoch_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mid_epoch_run, run)
    state = ckpt.load_state(run / "last")
    state["rng"] = state["rng"] * 2  # as a 2-process run writes it: one set of random streams per rank
    torch.save(state, run / "last" / ckpt.STATE_FILE)
    before = (run / "config.yaml").read_bytes()
    err = refused(capsys, ["train", "--resume", str(run)])
    assert "written by a run with 2 process(es), this one has 1" in err
    assert (run / "config.yaml").read_bytes() == before


def _foreign_optimizer_state(width: int) -> dict:
    """The state_dict of the run's (fused AdamW) optimizer for the tiny model at another width."""
    from spikemlp import models
    from spikemlp.train.config import to_dict
    from spikemlp.train.optim import build_optimizer

    cfg = from_dict({**TINY, "model_kwargs": {"width": width}})
    model = models.from_config(to_dict(cfg), 10)
    optimizer = build_optimizer(model, cfg, cfg.batch_size)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    return optimizer.state_dict()


@pytest.mark.parametrize("width", [4, 16])  # a smaller model (once a segfault), a larger one (once silent)
def test_a_foreign_optimizer_state_is_one_line(mid_epoch_run, tmp_path, capsys, width):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mid_epoch_run, run)
    state = ckpt.load_state(run / "last")
    state["optimizer"] = _foreign_optimizer_state(width)
    torch.save(state, run / "last" / ckpt.STATE_FILE)
    before = (run / "config.yaml").read_bytes()
    err = refused(capsys, ["train", "--resume", str(run)])
    assert (
        f"the optimizer's exp_avg for a parameter of shape [8, 3, 3, 3] has shape [{width}, 3, 3, 3]" in err
    )
    assert (run / "config.yaml").read_bytes() == before


def test_an_optimizer_state_with_other_parameter_counts_is_one_line(mid_epoch_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mid_epoch_run, run)
    state = ckpt.load_state(run / "last")
    state["optimizer"]["param_groups"][0]["params"].append(99)  # one more parameter than the model has
    torch.save(state, run / "last" / ckpt.STATE_FILE)
    assert "parameters, this model's" in refused(capsys, ["train", "--resume", str(run)])
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:1] * 3
    torch.save(state, run / "last" / ckpt.STATE_FILE)
    assert "has 3 parameter group(s), this optimizer" in refused(capsys, ["train", "--resume", str(run)])


def test_resuming_with_another_architecture_is_one_line(mid_epoch_run, capsys):
    before = (mid_epoch_run / "config.yaml").read_bytes()
    err = refused(capsys, ["train", "--resume", str(mid_epoch_run), "--model_kwargs.width", "12"])
    assert "holds another architecture (conv.weight: saved [8, 3, 3, 3], this model [12, 3, 3, 3]" in err
    assert (mid_epoch_run / "config.yaml").read_bytes() == before


def test_a_run_killed_before_its_first_checkpoint_is_started_again(mid_epoch_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes((mid_epoch_run / "config.yaml").read_bytes())  # killed here
    err = refused(capsys, ["train", "--resume", str(run)])
    assert "stopped before its first checkpoint" in err and "start it again without --resume" in err
    assert "no checkpoint at" not in err


def test_the_python_api_says_the_same_for_a_run_without_a_checkpoint(mid_epoch_run, tmp_path):
    from spikemlp.train import load_config, train

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes((mid_epoch_run / "config.yaml").read_bytes())
    with pytest.raises(
        ValueError, match="stopped before its first checkpoint.*start it again without --resume"
    ):
        train(load_config(run / "config.yaml"), run, resume=True)
