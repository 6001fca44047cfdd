"""Recipes and overrides: the schema, type checks, clear errors, the command line, every recipe in
configs/."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import timm
import yaml

import spikemlp  # noqa: F401  (registers the models)
from spikemlp.cli import build_parser
from spikemlp.train.commands import _overrides
from spikemlp.train.config import ConfigError, TrainConfig, from_dict, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))


def test_overrides_apply_on_top_of_the_recipe_with_types_checked(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: mlp_spe_t_cifar\nepochs: 30\nlr: 1e-3\nmodel_kwargs: {embed_dim: 24}\n")
    cfg = load_config(recipe, {"epochs": 5, "T": 6, "time_budget": 2})
    assert cfg.model == "mlp_spe_t_cifar"
    assert cfg.epochs == 5 and cfg.T == 6
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.time_budget == 2.0 and isinstance(cfg.time_budget, float)  # int accepted for a float key
    assert cfg.model_kwargs == {"embed_dim": 24}
    assert cfg.batch_size == TrainConfig().batch_size  # untouched keys keep their defaults


def test_unknown_key_is_one_error_naming_the_close_match(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epoch: 3\n")
    with pytest.raises(
        ConfigError, match=r"unknown config key 'epoch' in recipe .*Did you mean epochs.*Valid keys"
    ):
        load_config(recipe)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("epochs", 2.5, "expects an integer"),
        ("ema", "yes please", "expects true or false"),
        ("lr", "fast", "expects a number"),
        ("T", [4], "expects an integer or null"),
        ("batch_size", True, "expects an integer"),
    ],
)
def test_wrong_types_are_refused(key, value, expected):
    with pytest.raises(ConfigError, match=f"config key '{key}'.*{expected}"):
        from_dict({key: value})


def test_impossible_values_are_refused():
    with pytest.raises(ConfigError, match="'amp' must be one of none, bf16, fp16"):
        from_dict({"amp": "fp8"})
    with pytest.raises(ConfigError, match="'batch_size' must be at least 1"):
        from_dict({"batch_size": 0})


def test_saved_config_loads_back_equal(tmp_path):
    cfg = from_dict(
        {"model": "mlp_spe_t", "T": 6, "scale": [0.5, 1.0], "clip_grad": 5, "model_kwargs": {"a": 1}}
    )
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_command_line_sets_any_key_and_single_model_arguments():
    args = build_parser().parse_args(
        [
            "train",
            "-c",
            "x.yaml",
            "--out",
            "run",
            "--epochs",
            "3",
            "--T",
            "2",
            "--time-budget",
            "7.5",
            "--data-dir",
            "somewhere",
            "--model_kwargs.embed_dim",
            "24",
            "--model-kwargs.depths",
            "[1, 1, 2, 1]",
            "--ema",
            "true",
            "--scale",
            "[0.35, 1]",
        ]
    )
    assert args.config == "x.yaml" and args.out == "run"
    assert _overrides(args) == {
        "epochs": 3,
        "T": 2,
        "time_budget": 7.5,
        "data_dir": "somewhere",
        "ema": True,
        "scale": [0.35, 1],
        "model_kwargs": {"embed_dim": 24, "depths": [1, 1, 2, 1]},
    }


def test_command_line_unknown_option_names_the_close_key(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["train", "--out", "run", "--epoch", "3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown option --epoch" in err and "Did you mean --epochs" in err
    assert err.count("\n") <= 3  # one message, not a traceback


def test_missing_recipe_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="recipe .*nope.yaml not found"):
        load_config(tmp_path / "nope.yaml")


def test_the_recipes_are_all_there():
    names = {p.stem for p in RECIPES}
    expected = {
        "imagenet_mlp_spe_t_T4",
        "imagenet_mlp_spe_t_T6",
        "imagenet_mlp_spe_s_T4",
        "imagenet_mlp_s_T4",
        "imagenet_mlp_spe_b_T6",
        "imagenet_snn_mlp_t",
        "imagenet_snn_mlp_s",
        "imagenet_snn_mlp_b",
        "cifar10_authors_mlp_spe_t",
        "cifar10_mlp_spe_t_cifar",
        "cifar100_mlp_spe_t_cifar",
        "cifar10_snn_mlp_t_cifar",
        "cifar100_snn_mlp_t_cifar",
        "cifar10_cpu_speedrun",
    }
    assert expected <= names, f"missing recipes: {sorted(expected - names)}"


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_is_valid_says_where_its_numbers_come_from_and_names_a_model(recipe):
    text = recipe.read_text()
    comments = " ".join(line for line in text.splitlines() if line.startswith("#"))
    assert "docs/" in comments or "our choice" in comments.lower(), (
        "a recipe must say where its numbers come from"
    )
    cfg = load_config(recipe)  # raises on unknown keys or wrong types
    assert set(yaml.safe_load(text)) <= {f.name for f in dataclasses.fields(TrainConfig)}
    if cfg.model.startswith("snn_mlp") and not timm.list_models("snn_mlp*"):
        pytest.skip("the SNN-MLP models are not registered yet")
    assert cfg.model in timm.list_models(), f"{recipe.name}: unknown model {cfg.model}"


def test_published_imagenet_settings_match_spec():
    t4 = load_config(CONFIGS / "imagenet_mlp_spe_t_T4.yaml")
    assert (t4.opt, t4.lr, t4.momentum, t4.weight_decay, t4.epochs, t4.warmup_epochs) == (
        "sgd",
        0.1,
        0.9,
        0.0,
        100,
        0,
    )
    assert t4.batch_size * 8 == 512 and t4.repeated_aug == 3
    assert (t4.mixup, t4.cutmix, t4.smoothing, t4.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert (
        t4.auto_augment == "rand-m9-mstd0.5-inc1" and t4.interpolation == "bicubic" and t4.crop_pct == 0.875
    )
    snn = load_config(CONFIGS / "imagenet_snn_mlp_t.yaml")
    assert snn.opt == "adamw" and snn.lr * snn.batch_size * 8 / snn.lr_base_batch == pytest.approx(1e-3)
    assert (snn.weight_decay, snn.epochs, snn.warmup_epochs, snn.clip_grad) == (0.05, 300, 20, 5.0)
    assert (snn.lif_lr, snn.lif_weight_decay, snn.lif_freeze_epochs, snn.ema) == (1e-4, 0.0, 1, False)
    assert [load_config(CONFIGS / f"imagenet_snn_mlp_{v}.yaml").drop_path for v in "tsb"] == [0.2, 0.3, 0.5]
    assert load_config(CONFIGS / "imagenet_mlp_spe_t_T6.yaml").T == 6


def test_evaluation_settings_default_as_the_training_configuration():
    import dataclasses

    from spikemlp.data.loaders import EvalSettings

    defaults, cfg = EvalSettings(), TrainConfig()
    for f in dataclasses.fields(EvalSettings):
        assert getattr(defaults, f.name) == getattr(cfg, f.name), f.name
    recorded = EvalSettings.from_config({**dataclasses.asdict(cfg), "crop_pct": 1.0}, workers=0)
    assert (recorded.crop_pct, recorded.workers) == (1.0, 0)


def test_a_recipe_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    from spikemlp.train import recipes

    by_path = load_config(CONFIGS / "cifar10_cpu_speedrun.yaml")
    monkeypatch.chdir(tmp_path)  # outside the checkout
    assert load_config("cifar10_cpu_speedrun") == by_path == load_config("cifar10_cpu_speedrun.yaml")
    assert set(recipes.names()) == {p.stem for p in RECIPES}  # the package carries every recipe
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "cifar10_cpu_speedrun.yaml").write_text("epochs: 3\n")
    assert load_config("cifar10_cpu_speedrun").epochs == 3  # the folder's configs/ comes first
    with pytest.raises(
        FileNotFoundError, match="recipe nope not found; the recipes shipped are: .*cifar10_cpu"
    ):
        load_config("nope")


def test_the_wheel_ships_the_recipes():
    import tomllib

    package_data = tomllib.loads((CONFIGS.parent / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    assert "configs/*.yaml" in package_data["spikemlp"]
    assert (CONFIGS.parent / "src" / "spikemlp" / "configs").resolve() == CONFIGS.resolve()


def test_spikemlp_train_runs_a_recipe_by_name_outside_the_checkout(tmp_path, monkeypatch, capsys):
    from spikemlp.cli import main

    monkeypatch.chdir(tmp_path)
    tiny = ["--data", "synthetic", "--synthetic_size", "256", "--processes", "1", "--eval_batch_size", "64"]
    argv = [
        "train",
        "-c",
        "cifar10_cpu_speedrun",
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "2",
        "--out",
        "run",
    ]
    assert main(argv + tiny) == 0
    assert "results in run" in capsys.readouterr().out and (tmp_path / "run" / "best").is_dir()
