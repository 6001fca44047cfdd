"""The ``spikemlp`` command. Thin: each subcommand lives next to the library code it drives.

Each module in ``COMMAND_MODULES`` defines ``register(subparsers)``, which adds its subcommand(s) and
sets ``func`` on the parser to a callable taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError

__all__ = ["COMMAND_MODULES", "UserError", "build_parser", "main"]

COMMAND_MODULES = [
    "spikemlp.models.commands",
    "spikemlp.convert.commands",
    "spikemlp.data.commands",
    "spikemlp.train.commands",
    "spikemlp.export.commands",
    "spikemlp.analysis.commands",
]

# Optional dependencies (top-level module -> the extra that installs it), named when a command needs one.
OPTIONAL_EXTRAS = {"onnx": "onnx", "onnxruntime": "onnx", "tensorboard": "tensorboard"}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="spikemlp",
        description="Spiking MLP vision models: data, models, training, evaluation and analysis.",
    )
    parser.add_argument("--version", action="version", version=f"spikemlp {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for commands that re-launch themselves
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
