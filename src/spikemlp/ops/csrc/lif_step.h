// The LIF neuron's arithmetic for one time step, shared by the fused LIF kernel
// (neurons/csrc/lif_cpu.cpp) and the spike kernel's neuron epilogue (spike_matmul_cpu.cpp), so that both
// give the reference's charge, spikes and reset bit for bit. T is a scalar or a vector of them; round
// rounds to the storage dtype (the identity for float and double).
#pragma once

#include <cmath>
#include <cstdint>

namespace spikemlp {

// Charge modes: must match spikemlp/neurons/neuron_spec.py.
enum Charge : int64_t { kIF = 0, kDecayInput = 1, kNoDecay = 2 };

// Whether 1/tau is exact (tau a power of two, as the default 2): then q * (1/tau) is the same number as
// q / tau (both are the correctly rounded q / tau), and a step may multiply instead of dividing.
template <typename S>
inline bool exact_reciprocal(S tau) {
  int exponent = 0;
  return tau > S(0) && std::frexp(tau, &exponent) == S(0.5);
}

// The charge H from the membrane v and the input x; over_tau(q) is q / tau.
template <int64_t MODE, typename T, typename Round, typename OverTau>
inline T charge(T v, T x, T v_reset, Round round, OverTau over_tau) {
  if constexpr (MODE == kIF) {
    return round(v + x);
  } else if constexpr (MODE == kDecayInput) {  // H = V + (X - (V - V_reset)) / tau
    const T a = round(v - v_reset);
    return round(v + round(over_tau(round(x - a))));
  } else {  // H = V - (V - V_reset) / tau + X
    const T a = round(v - v_reset);
    return round(round(v - round(over_tau(a))) + x);
  }
}

// Reset after a spike s (0 or 1), in the reference's order: hard V = H (1 - S) + V_reset S; soft
// V = H - S V_th. V_reset and V_th arrive already rounded to the storage dtype, so the products are exact.
template <bool HARD, typename T, typename Round>
inline T reset(T h, T s, T one, T v_reset, T v_th, Round round) {
  if constexpr (HARD) {
    return round(h * (one - s) + v_reset * s);
  } else {
    return round(h - s * v_th);
  }
}

}  // namespace spikemlp
