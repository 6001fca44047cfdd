"""The largest-batch search of benchmarks/bench_models.py (``--largest-batch`` on a GPU), tested with
predicates whose answer is known, since the reported batch is only as good as the search."""

import importlib.util
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_models.py"
_spec = importlib.util.spec_from_file_location("bench_models", _SCRIPT)
bench_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_models)


def _search(threshold: int, start: int, limit: int):
    """Search with a memory that holds every batch up to ``threshold``; returns the result and the probes."""
    probes = []

    def fits(n: int) -> bool:
        assert 1 <= n <= limit, f"probed {n} outside [1, {limit}]"
        probes.append(n)
        return n <= threshold

    return bench_models.largest_fitting(fits, start, limit), probes


@pytest.mark.parametrize("start", [1, 7, 32, 100])
@pytest.mark.parametrize("threshold", [1, 2, 31, 32, 33, 95, 1000, 5000])
def test_finds_the_largest_fitting_batch_within_a_thirty_second(threshold, start):
    (found, at_limit), probes = _search(threshold, start, limit=16384)
    assert not at_limit
    assert found <= threshold, "reported a batch that does not fit"
    assert threshold - found <= max(0, found // 32), f"{found} is not within 1/32 of {threshold}"
    assert found in probes and all(n > threshold for n in probes if n > found), "the result was not probed"
    assert len(probes) <= 24, f"{len(probes)} probes"


def test_exact_below_sixty_four():
    for threshold in range(1, 64):
        (found, _), _ = _search(threshold, start=32, limit=16384)
        assert found == threshold


def test_reports_reaching_the_limit():
    assert _search(threshold=10**9, start=32, limit=500)[0] == (500, True)
    assert _search(threshold=10**9, start=1000, limit=500)[0] == (500, True)
    (found, at_limit), probes = _search(threshold=499, start=32, limit=500)
    assert not at_limit and 499 - found <= found // 32
    assert max(probes) == 500, "the limit itself was not tried"


def test_nothing_fits():
    assert _search(threshold=0, start=32, limit=16384)[0] == (0, False)
