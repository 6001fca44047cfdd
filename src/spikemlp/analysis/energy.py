"""Energy per operation, after the field's convention (docs/energy.md).

E_SNN = E_MAC x MACs(layers with real-valued input) + E_AC x SOPs(layers with binary input). The constants
are Horowitz's 45 nm figures; they price arithmetic only. What the model leaves out is listed in
``LEFT_OUT`` and printed in every report, so that nobody reads the number as a full-chip measurement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# name -> (E_MAC, E_AC) in picojoules per operation, 45 nm (Horowitz, ISSCC 2014).
ENERGY_PRESETS = {"fp32": (4.6, 0.9), "fp16": (1.5, 0.4), "int8": (0.23, 0.03)}

LEFT_OUT = (
    "normalisation (BatchNorm folds into weights, biases and thresholds at inference; a GroupNorm, whose "
    "statistics are per sample, is not folded and not counted either)",
    "additions of skip connections and of the SPE cell's branch sums",
    "neuron updates (membrane charge, compare, reset) and activation functions",
    "the mean over the token grid before the classifier and the mean over time steps",
    "memory traffic (weight and activation reads and writes), which often dominates on real hardware",
    "the cost of finding and routing spikes (address events, gathers)",
)


@dataclass(frozen=True)
class EnergyModel:
    """Picojoules per multiply-accumulate and per accumulate."""

    e_mac_pj: float = 4.6
    e_ac_pj: float = 0.9
    name: str = "fp32"

    @classmethod
    def preset(cls, name: str) -> EnergyModel:
        if name not in ENERGY_PRESETS:
            raise ValueError(
                f"unknown energy preset {name!r}; choose one of {', '.join(ENERGY_PRESETS)} "
                "or give E_MAC and E_AC explicitly"
            )
        e_mac, e_ac = ENERGY_PRESETS[name]
        return cls(e_mac, e_ac, name)

    @classmethod
    def resolve(cls, energy: str | EnergyModel | None, e_mac: float | None = None, e_ac: float | None = None):
        """A preset name or model, with optional overrides of either constant (then named 'custom')."""
        model = energy if isinstance(energy, EnergyModel) else cls.preset(energy or "fp32")
        if e_mac is None and e_ac is None:
            return model
        for label, value in (("E_MAC", e_mac), ("E_AC", e_ac)):
            if value is not None and not value >= 0:
                raise ValueError(f"{label} must be a non-negative number of picojoules, got {value}")
        return cls(
            model.e_mac_pj if e_mac is None else float(e_mac),
            model.e_ac_pj if e_ac is None else float(e_ac),
            "custom",
        )

    def energy_pj(self, macs: float, sops: float) -> float:
        return self.e_mac_pj * macs + self.e_ac_pj * sops

    def as_dict(self) -> dict:
        return {**asdict(self), "left_out": list(LEFT_OUT)}


__all__ = ["ENERGY_PRESETS", "LEFT_OUT", "EnergyModel"]
