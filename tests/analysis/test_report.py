"""The analysis report: every total is the sum of its rows, and each row follows the accounting rules."""

from __future__ import annotations

import pytest

from spikemlp.analysis import analyze, render_markdown
from spikemlp.analysis.report import TOTAL_KEYS, stage_of


@pytest.fixture(scope="module")
def report(tiny_mlp_spe, random_batches):
    return analyze(tiny_mlp_spe, random_batches, model_name="tiny")


def test_totals_equal_the_sum_of_rows(report):
    rows = report["layers"]
    for key in TOTAL_KEYS:
        assert report["network"][key] == pytest.approx(sum(r[key] for r in rows), rel=1e-12)
        assert report["network"][key] == pytest.approx(
            sum(s[key] for s in report["stages"].values()), rel=1e-12
        )
        for stage, tot in report["stages"].items():
            assert tot[key] == pytest.approx(sum(r[key] for r in rows if r["stage"] == stage), rel=1e-12)
    assert report["network"]["layers"] == len(rows) == sum(s["layers"] for s in report["stages"].values())


def test_rows_follow_the_accounting(report):
    e = report["energy"]
    assert report["T"] == 3 and report["images"] == 12
    assert set(report["stages"]) == {"stem", "stage0", "stage1", "stage2", "stage3", "head"}
    for r in report["layers"]:
        assert r["energy_pj"] == pytest.approx(e["e_mac_pj"] * r["macs"] + e["e_ac_pj"] * r["sops"])
        assert r["ann_energy_pj"] == pytest.approx(e["e_mac_pj"] * r["dense_macs_per_step"])
        if r["input_kind"] == "binary":
            assert r["macs"] == 0 and len(r["input_rate_per_step"]) == 3
            assert r["sops_estimate"] == pytest.approx(3 * r["input_rate_mean"] * r["dense_macs_per_step"])
            # Where every input reaches the same number of outputs (linear maps, 1x1 convs, axial maps)
            # the estimate is exact; 3x3 convs with padding and stride differ at the borders.
            if r["type"] in ("Linear", "AxialProjection") or r["name"].endswith("fuse"):
                assert r["sops"] == pytest.approx(r["sops_estimate"], rel=1e-12)
        else:
            assert r["sops"] == 0 and r["sops_estimate"] == 0
    stem = report["layers"][0]
    # The stem conv sees the image once for all steps: 6 channels x 16 x 16 outputs x 3 x 2 x 2 taps.
    assert (stem["name"], stem["role"], stem["steps_computed"]) == ("stem.conv", "encoding", 1)
    assert stem["macs"] == stem["dense_macs_per_step"] == 6 * 16 * 16 * 12
    head = report["layers"][-1]
    assert (head["name"], head["role"], head["input_kind"]) == ("head", "readout", "real")
    # The readout as accumulation: one column per spike of the last neuron, 10 scalings.
    last = report["neurons"][-1]
    assert head["as_accumulation"]["source"] == last["name"]
    assert head["as_accumulation"]["sops"] == pytest.approx(last["spikes_per_image"] * 10)
    assert report["mfi"]["is_mfi"] is True
    spe_convs = [r for r in report["layers"] if r["name"].endswith("cell2node.0.conv")]
    assert any(r["sops"] != pytest.approx(r["sops_estimate"]) for r in spe_convs)


def test_firing_rates_and_confusion(report):
    for n in report["neurons"]:
        assert len(n["rate_per_step"]) == 3
        assert n["rate_mean"] == pytest.approx(sum(n["rate_per_step"]) / 3)  # equal neurons per step
    assert 0 < report["mean_firing_rate"] < 1
    cm = report["confusion_matrix"]
    assert sum(map(sum, cm)) == 12
    assert report["accuracy"] == pytest.approx(sum(cm[i][i] for i in range(10)) / 12)


def test_markdown_has_every_layer_and_the_energy_model(report):
    md = render_markdown(report)
    for r in report["layers"]:
        assert f"| `{r['name']}` |" in md
    for n in report["neurons"]:
        assert f"| `{n['name']}` |" in md
    assert "E_MAC = 4.6 pJ, E_AC = 0.9 pJ" in md and "Left out:" in md and "memory traffic" in md


def test_snn_mlp_report_is_all_mac(tiny_snn_mlp, random_batches):
    report = analyze(tiny_snn_mlp, random_batches)
    net = report["network"]
    assert report["T"] == 1 and net["binary_input_layers"] == 0 and net["sops"] == 0
    assert net["energy_pj"] == pytest.approx(net["ann_energy_pj"]) and report["mfi"]["is_mfi"] is False
    assert "every operation is a MAC" in render_markdown(report)
    assert all(n["type"] == "GroupLIF" and 0 < n["rate_mean"] < 1 for n in report["neurons"])


def test_stage_names():
    assert stage_of("stages.2.blocks.0.token_mix.proj_h") == "stage2"
    assert stage_of("stem.conv") == "stem" and stage_of("patch_embed.proj") == "stem"
    assert stage_of("head") == "head" and stage_of("layers.1.blocks.0.mlp.fc1") == "stage1"
