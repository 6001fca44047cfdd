"""Energy constants: the presets of docs/energy.md, overrides, and clear errors."""

from __future__ import annotations

import pytest

from spikemlp.analysis import ENERGY_PRESETS, LEFT_OUT, EnergyModel


def test_presets_are_the_field_constants():
    assert ENERGY_PRESETS == {"fp32": (4.6, 0.9), "fp16": (1.5, 0.4), "int8": (0.23, 0.03)}
    e = EnergyModel.preset("fp16")
    assert (e.e_mac_pj, e.e_ac_pj, e.name) == (1.5, 0.4, "fp16")
    assert EnergyModel.resolve(None) == EnergyModel(4.6, 0.9, "fp32")


def test_energy_is_emac_times_macs_plus_eac_times_sops():
    e = EnergyModel.preset("fp32")
    assert e.energy_pj(macs=1000, sops=2000) == pytest.approx(4.6 * 1000 + 0.9 * 2000)


def test_overrides_make_a_custom_model():
    e = EnergyModel.resolve("int8", e_ac=0.05)
    assert (e.e_mac_pj, e.e_ac_pj, e.name) == (0.23, 0.05, "custom")


def test_bad_constants_are_named():
    with pytest.raises(ValueError, match="unknown energy preset 'fp8'; choose one of fp32, fp16, int8"):
        EnergyModel.preset("fp8")
    with pytest.raises(ValueError, match="E_MAC must be a non-negative number of picojoules, got -1"):
        EnergyModel.resolve("fp32", e_mac=-1.0)


def test_report_states_what_is_left_out():
    left_out = " ".join(EnergyModel().as_dict()["left_out"])
    for item in ("BatchNorm", "additions", "memory traffic", "neuron updates"):
        assert item in left_out
    assert len(LEFT_OUT) >= 4
