"""scripts/gpu_check on a machine without a GPU (CUDA hidden where there is one): it checks the wheels and
the imports, then stops with one line saying so and exit status 2, before any GPU step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check"
NO_GPU = "no CUDA GPU on this machine: checked the wheels and the imports only (run it where a GPU is)"


def test_without_a_gpu_it_checks_what_it_can_and_says_so(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == f"gpu_check: {NO_GPU}"
    assert [re.sub(r"\d+s$", "Ns", line) for line in lines[:-1]] == [
        f"gpu_check: {step}: ok in Ns" for step in ("environment", "wheels", "imports")
    ]
    assert (out / "steps.txt").read_text().splitlines() == lines
    assert (
        "spikemlp" in (out / "imports.log").read_text() and "torch" in (out / "environment.log").read_text()
    )
    assert not (out / "pytest.log").exists() and not (out / "parity.json").exists()  # no GPU step ran


def test_without_out_it_says_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0 and "set OUT to the folder for the results" in done.stderr
