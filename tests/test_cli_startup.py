"""`spikemlp --help` answers without loading torch; a command still finds the models registered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from spikemlp import cli

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_help_does_not_import_torch():
    out = _python(
        "import sys; sys.argv = ['spikemlp', '--help']\n"  # as the `spikemlp` script starts
        "from spikemlp.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch')"
    )
    assert "eval      evaluate a checkpoint" in out and out.strip().endswith("no torch")


def test_the_command_registers_the_models_it_needs():
    out = _python(
        "import sys; sys.argv = ['spikemlp']\n"
        "from spikemlp.cli import main\n"
        "import timm; main(['models', '*xt_cifar*']); print(timm.is_model('mlp_spe_xt_cifar'))"
    )
    assert "snn_mlp_xt_cifar" in out and out.strip().endswith("True")


def test_importing_the_package_elsewhere_registers_the_models():
    assert _python("import spikemlp, timm; print(timm.is_model('snn_mlp_t'))").strip() == "True"


def test_the_listing_without_imports_matches_the_commands_own_help():
    full = cli.build_parser()._subparsers._group_actions[0]
    helps = {a.dest: a.help for a in full._choices_actions}
    assert helps == {name: help_line for name, (_, help_line) in cli.COMMANDS.items()}
