"""Runs ``spikemlp`` with the tiny test models registered: ``python run_train.py train ...`` (also under
torchrun). With SPIKEMLP_TEST_DUMP=DIR every rank writes its final weights to DIR/rank{R}.safetensors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_tiny_models  # noqa: E402,F401  (registers the tiny models)
from safetensors.torch import save_file  # noqa: E402

import spikemlp.train.trainer as trainer  # noqa: E402
from spikemlp.cli import main  # noqa: E402

_train = trainer.train


def _train_and_dump(cfg, run_dir, resume=False, overwrite=False):
    result = _train(cfg, run_dir, resume, overwrite)
    dump = os.environ.get("SPIKEMLP_TEST_DUMP")
    if dump:
        Path(dump).mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().clone().contiguous() for k, v in result.model.state_dict().items()}
        save_file(state, str(Path(dump) / f"rank{os.environ.get('RANK', '0')}.safetensors"))
    return result


trainer.train = _train_and_dump

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
