"""The ``spikemlp`` command. Thin: each subcommand lives next to the library code it drives.

Each module in ``COMMAND_MODULES`` defines ``register(subparsers)``, which adds its subcommand(s) and
sets ``func`` on the parser to a callable taking the parsed arguments and returning an exit code. Only the
module of the command given is imported (with torch), so ``spikemlp --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError

__all__ = ["COMMANDS", "COMMAND_MODULES", "UserError", "build_parser", "main"]

# Each command: the module that registers it, and its one-line help (for the listing without imports).
COMMANDS = {
    "models": ("spikemlp.models.commands", "list the models with parameters and MACs per step"),
    "convert": ("spikemlp.convert.commands", "convert released weights to spikemlp's layout (or back)"),
    "data": ("spikemlp.data.commands", "check, download and locate data sets"),
    "train": (
        "spikemlp.train.commands",
        "train a model from a recipe (configs/*.yaml); every recipe key can be overridden",
    ),
    "eval": ("spikemlp.train.commands", "evaluate a checkpoint: top-1, top-5 and per-class accuracy"),
    "export": ("spikemlp.export.commands", "export a model to another format (ONNX)"),
    "analyze": (
        "spikemlp.analysis.commands",
        "firing rates, exact SOPs, energy and the MFI check of a model on a data set",
    ),
}
COMMAND_MODULES = list(dict.fromkeys(module for module, _ in COMMANDS.values()))

# Optional dependencies (top-level module -> the extra that installs it), named when a command needs one.
OPTIONAL_EXTRAS = {"onnx": "onnx", "onnxruntime": "onnx", "tensorboard": "tensorboard"}


def build_parser(commands: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``commands`` alone (the others listed by their help only)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="spikemlp",
        description="Spiking MLP vision models: data, models, training, evaluation and analysis.",
    )
    parser.add_argument("--version", action="version", version=f"spikemlp {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = list(COMMANDS) if commands is None else commands
    if wanted:
        importlib.import_module("spikemlp.models")  # registers the models with timm
    for module in dict.fromkeys(COMMANDS[name][0] for name in wanted):
        importlib.import_module(module).register(subparsers)
    for name, (_, help_line) in COMMANDS.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=help_line)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([command] if command in COMMANDS else [])
    args = parser.parse_args(argv)
    args.argv = argv  # for commands that re-launch themselves
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as err:
        extra = OPTIONAL_EXTRAS.get((err.name or "").partition(".")[0])
        if extra is None:
            raise  # not an optional dependency: a broken installation, whose traceback helps
        print(
            f"spikemlp {args.command}: error: this needs {err.name}, which is not installed: "
            f"pip install 'spikemlp[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except (UserError, OSError, ValueError, KeyError) as err:
        # Library errors are written to be read by a person: show the message, not the stack. A file
        # system's refusal (permission, a file where a folder must be) is as much the user's to fix.
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        if isinstance(err, OSError) and err.strerror and err.filename:
            msg = f"{err.filename}: {err.strerror}"
        print(f"spikemlp {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
