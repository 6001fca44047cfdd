"""The atomic-write helper every output of the library goes through."""

import os
import stat

import pytest

from spikemlp._files import atomic_write, atomic_write_text


def test_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_a_failing_writer_leaves_the_last_good_file(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"good")

    def half_then_crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"ha")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_output_gets_umask_permissions_not_mkstemps_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
