#!/usr/bin/env bash
# `make demo`: train the CPU speedrun recipe on CIFAR-10 for a few minutes, evaluate it, analyse it.
# Finds CIFAR-10 where spikemlp looks for data ($SPIKEMLP_DATA, ./data, ~/.cache/spikemlp, ...).
# DEMO_MINUTES sets the training budget (default 8; the full recipe uses 20), DEMO_OUT the run folder.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${DEMO_MINUTES:-8}"
run="${DEMO_OUT:-demo_runs/speedrun-$(date +%Y%m%d-%H%M%S)}"

echo "== spikemlp demo: a spiking MLP-SPE on CIFAR-10, ${minutes} minutes of CPU training =="
if ! spikemlp train -c configs/cifar10_cpu_speedrun.yaml --out "$run" --time-budget "$minutes"; then
    echo "demo: training did not run (see the message above; a missing CIFAR-10 lists where it was looked" \
         "for; put cifar-10-batches-py in ./data or set SPIKEMLP_DATA, or run: spikemlp data download cifar10)" >&2
    exit 1
fi

echo
echo "== evaluation of the best checkpoint =="
spikemlp eval --checkpoint "$run" --data cifar10 --json "$run/eval.json"

echo
if spikemlp analyze --help >/dev/null 2>&1; then
    echo "== analysis: firing rates, synaptic operations, energy, multiplication-free inference =="
    spikemlp analyze --checkpoint "$run" --data cifar10 --limit 1000 --out "$run/analysis"
else
    echo "(spikemlp analyze is not available in this version; skipping the analysis)"
fi

echo
echo "== results =="
echo "run folder:        $run"
echo "  summary.json     final test accuracy, epochs, wall time, images/s, peak memory"
echo "  metrics.csv      one row per epoch (accuracy against wall-clock minutes)"
echo "  best/, last/     checkpoints (weights as safetensors)"
echo "  eval.json        top-1, top-5 and per-class accuracy"
[ -d "$run/analysis" ] && echo "  analysis/        report.md, report.json and plots"
echo "TensorBoard:       tensorboard --logdir $run"
