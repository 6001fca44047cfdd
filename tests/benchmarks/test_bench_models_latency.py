"""benchmarks/bench_models.py: the latency summary (pure functions on given times), and ``spikemlp-deploy``
treated as inference only everywhere (no training step, no training-mode check). No timing is asserted."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(_BENCHMARKS) not in sys.path:  # the scripts import their siblings (the baseline) by name
    sys.path.insert(0, str(_BENCHMARKS))

import bench_models  # noqa: E402

TINY = ("mlp_spe_xt_cifar", 32, 1)  # model, image size, T: a forward in milliseconds


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# --- the summary, from given times ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 30, 31])
@pytest.mark.parametrize("q", [0, 50, 95, 100])
def test_percentile_is_numpys_linear_percentile(n, q):
    values = list(np.random.default_rng(n).random(n))
    assert bench_models.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_latency_stats_median_and_p95_in_ms():
    times = [i / 1000 for i in range(10, 0, -1)]  # 10 ms .. 1 ms, in no particular order
    stats = bench_models.latency_stats(times)
    assert stats["runs"] == 10
    assert stats["median_ms"] == pytest.approx(1e3 * statistics.median(times)) == pytest.approx(5.5)
    assert stats["p95_ms"] == pytest.approx(9.55)  # rank 0.95 * 9 = 8.55: between 9 and 10 ms


def test_throughput_is_the_batch_over_the_median_time():
    stats = bench_models.throughput_stats([0.5, 0.1, 0.2], batch=4)
    assert stats == {"repeats": 3, "median_s": 0.2, "images_per_s": pytest.approx(20.0)}


def _rows(impl: str, threads: int, median_ms: float, p95_ms: float, per_s: dict[int, float]):
    latency = {"impl": impl, "model": "m", "threads": threads, "batch": 1, "median_ms": median_ms}
    latency["p95_ms"] = p95_ms
    throughput = [
        {"impl": impl, "model": "m", "threads": threads, "batch": b, "images_per_s": v}
        for b, v in per_s.items()
    ]
    return [latency], throughput


def _report():
    latency, throughput = [], []
    for args in (
        ("spikingjelly", 1, 40.0, 60.0, {4: 50.0, 32: 80.0}),
        ("spikingjelly", 2, 25.0, 30.0, {4: 90.0, 32: 150.0}),
        ("spikemlp-deploy", 1, 10.0, 20.0, {4: 200.0, 32: 400.0}),
        ("spikemlp-deploy", 2, 8.0, 10.0, {4: 300.0, 32: 600.0}),
    ):
        lat, tput = _rows(*args)
        latency += lat
        throughput += tput
    return latency, throughput


def test_latency_ratios_are_baseline_over_impl_and_impl_over_baseline_throughput():
    ratios = bench_models.latency_ratios(*_report())
    assert [(r["impl"], r["threads"]) for r in ratios] == [("spikemlp-deploy", 1), ("spikemlp-deploy", 2)]
    one, two = ratios
    assert one["median_latency_ratio"] == pytest.approx(4.0)  # 40 ms / 10 ms: four times faster
    assert one["p95_latency_ratio"] == pytest.approx(3.0)
    assert one["throughput_ratio_batch4"] == pytest.approx(4.0)
    assert one["throughput_ratio_batch32"] == pytest.approx(5.0)
    assert two["median_latency_ratio"] == pytest.approx(25 / 8)
    assert two["throughput_ratio_batch32"] == pytest.approx(4.0)


def test_thread_speedups_compare_each_impl_with_itself_at_the_fewest_threads():
    speedups = {r["impl"]: r for r in bench_models.thread_speedups(*_report())}
    assert set(speedups) == {"spikingjelly", "spikemlp-deploy"}
    deploy = speedups["spikemlp-deploy"]
    assert (deploy["threads"], deploy["over_threads"]) == (2, 1)
    assert deploy["latency_speedup"] == pytest.approx(10 / 8)
    assert deploy["throughput_speedup_batch4"] == pytest.approx(1.5)
    assert speedups["spikingjelly"]["throughput_speedup_batch32"] == pytest.approx(150 / 80)


def test_latency_table_has_a_line_per_impl_and_thread_count():
    latency, throughput = _report()
    table = bench_models.latency_table(latency, throughput, bench_models.latency_ratios(latency, throughput))
    lines = table.splitlines()
    assert len(lines) == 1 + len(latency)
    assert "B4 img/s" in lines[0] and "B32 img/s" in lines[0]
    assert any(line.split()[1] == "spikemlp-deploy" and "4.00" in line for line in lines[1:])


def test_interleaved_times_take_turns_after_the_warm_ups():
    order = []
    calls = {impl: (lambda r, impl=impl: order.append((impl, r))) for impl in ("a", "b")}
    times = bench_models.interleaved_times(calls, runs=2, warmups=3)
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)] + [
        ("a", 0), ("b", 0), ("a", 1), ("b", 1),
    ]  # fmt: skip
    assert {impl: len(t) for impl, t in times.items()} == {"a": 2, "b": 2}


def test_latency_thread_list_option():
    assert bench_models._int_list("1,2") == [1, 2]
    with pytest.raises(Exception, match="positive"):
        bench_models._int_list("0,2")


# --- spikemlp-deploy is inference only -----------------------------------------------------------------


def test_deploy_is_a_default_inference_only_cpu_implementation():
    assert "spikemlp-deploy" in bench_models.IMPLEMENTATIONS
    assert "spikemlp-deploy" in bench_models.DEFAULT_IMPLS.split(",")
    assert "spikemlp-deploy" in bench_models.INFERENCE_ONLY
    assert "spikemlp-deploy" in bench_models.CPU_ONLY


def test_deploy_builds_a_deployed_model_that_refuses_training():
    import spikemlp.deployment

    model = bench_models.IMPLEMENTATIONS["spikemlp-deploy"](*TINY, 10)
    assert isinstance(model, spikemlp.deployment.DeployedModel)
    assert model.eval() is model  # eval() works
    with pytest.raises(RuntimeError, match="inference only"):
        model.train()


def test_worker_times_no_training_step_for_deploy(restore_threads):
    result = bench_models.worker("spikemlp-deploy", *TINY, batch=1, repeats=1, threads=1)
    assert result["impl"] == "spikemlp-deploy" and result["forward_s"] > 0
    assert "train_step_s" not in result


def test_interleaved_worker_trains_only_the_trainable(restore_threads):
    out = bench_models.interleaved_worker(
        ["spikemlp-deploy", "spikemlp"], *TINY, batch=1, repeats=1, threads=1
    )
    rows = {r["impl"]: r for r in out["interleaved"]}
    assert "train_step_s" not in rows["spikemlp-deploy"]
    assert "train_step_s" in rows["spikemlp"]


def test_no_largest_batch_search_and_no_cuda_for_deploy():
    with pytest.raises(ValueError, match="inference only"):
        bench_models.largest_batch_worker("spikemlp-deploy", *TINY, start=1, limit=2)
    with pytest.raises(ValueError, match="CPU only"):
        bench_models.worker("spikemlp-deploy", *TINY, batch=1, repeats=1, threads=1, device="cuda")


def test_latency_worker_rows(restore_threads):
    out = bench_models.latency_worker(
        ["spikemlp-deploy", "spikemlp"], *TINY, runs=2, threads=[1], batches=[2], repeats=1
    )
    assert [(r["impl"], r["threads"], r["batch"], r["runs"]) for r in out["latency"]] == [
        ("spikemlp-deploy", 1, 1, 2), ("spikemlp", 1, 1, 2),
    ]  # fmt: skip
    assert [(r["impl"], r["batch"]) for r in out["throughput"]] == [("spikemlp-deploy", 2), ("spikemlp", 2)]
    assert all(r["p95_ms"] >= r["median_ms"] > 0 for r in out["latency"])


def test_equal_logits_check_reports_deploy_in_eval_mode_only(restore_threads):
    pytest.importorskip("spikingjelly")
    out = bench_models.check_equal_logits(*TINY, batch=2, threads=1, impls=["spikemlp-deploy"])
    for dtype in ("float32", "float64"):
        assert (
            out[f"max_abs_logit_diff_{dtype}_eval_deploy"] < 0.05 * out[f"max_abs_logit_{dtype}_eval"] + 1e-6
        )
        assert out[f"same_predictions_{dtype}_eval_deploy"].endswith("/2")
        assert isinstance(out[f"predictions_agree_{dtype}_eval_deploy"], bool)
        assert f"max_abs_logit_diff_{dtype}_train_deploy" not in out
    assert not any("deploy" in key for key in bench_models.check_equal_logits(*TINY, batch=2, threads=1))


def _run_script(*args: str) -> tuple[dict, str]:
    """Run bench_models.py; returns its JSON report and the text after it."""
    import json
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(_BENCHMARKS.parent / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(_BENCHMARKS / "bench_models.py"), *args],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )  # fmt: skip
    report, end = json.JSONDecoder().raw_decode(out.stdout)
    return report, out.stdout[end:]


def test_latency_mode_end_to_end():
    pytest.importorskip("spikingjelly")
    report, table = _run_script(
        "--latency", "--models", "mlp_spe_xt_cifar", "--impls", "spikemlp-deploy,spikingjelly",
        "--latency-runs", "2", "--latency-threads", "1", "--latency-batches", "2", "--repeats", "1",
    )  # fmt: skip
    assert report["benchmark"] == "latency" and not report["errors"]
    assert [(r["impl"], r["threads"]) for r in report["latency"]] == [
        ("spikemlp-deploy", 1),
        ("spikingjelly", 1),
    ]
    assert set(report["ratios"][0]) >= {
        "median_latency_ratio",
        "p95_latency_ratio",
        "throughput_ratio_batch2",
    }
    assert "spikemlp-deploy" in table and "p95 ms" in table
