// Fused multi-step LIF/IF for the CPU: one pass over memory forward, one pass backward.
//
// The tensors are [T, N] (contiguous, time major). Each task takes a block of neurons and runs the
// whole time loop on it with the membrane held in a small local array, so every input byte is read once
// and every output byte written once. The forward repeats, operation by operation, the arithmetic of
// the plain-PyTorch reference (spikemlp/neurons/reference.py), rounding to the storage dtype after
// every elementwise operation exactly as PyTorch does for bfloat16/float16 (compute in float, round),
// so the spikes are bit-identical to the reference. Build flags keep that true (see ops/_build.py):
// -O3 -ffp-contract=off, no -ffast-math (no FMA contraction, IEEE division); -fno-trapping-math,
// -mavx2 and -mavx512* only let the compiler vectorise, they do not change any value; -mfma only makes
// the explicit mul_add of the backward's exp polynomial one instruction.
//
// The backward reads only the forward's input X (storage dtype): it recomputes the charge H of a block of
// neurons for all steps (the forward's arithmetic, so the same H), then the spike with the forward's own
// rounding, and evaluates the surrogate gradient at u = H - V_th.
//
// The library depends on nothing but the C++ standard library (no torch headers): it compiles in
// seconds, needs no build tool, and is called through a small C interface with raw data pointers
// (spikemlp/ops/lif.py allocates the tensors).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "lif_step.h"
#include "parallel.h"

namespace {

constexpr int64_t kBlock = 256;  // neurons per block: T streams of 1 KiB (fp32) stay in L1

// Storage traits: how a dtype is loaded to its compute type and rounded back.
template <typename S>
struct Storage;

template <>
struct Storage<float> {
  using raw = float;
  using op = float;
  static inline op load(raw r) { return r; }
  static inline raw store(op v) { return v; }
  static inline op round(op v) { return v; }
};

template <>
struct Storage<double> {
  using raw = double;
  using op = double;
  static inline op load(raw r) { return r; }
  static inline raw store(op v) { return v; }
  static inline op round(op v) { return v; }
};

struct BFloat16Tag {};
struct HalfTag {};

template <>
struct Storage<BFloat16Tag> {
  // Raw bits, so that the conversions are plain integer operations the compiler can vectorise.
  using raw = uint16_t;
  using op = float;
  static inline op load(raw r) { return __builtin_bit_cast(float, static_cast<uint32_t>(r) << 16); }
  static inline raw store(op v) {
    // Round to nearest even, NaN -> canonical quiet NaN: the same as c10::BFloat16 and ATen's vector path.
    uint32_t u = __builtin_bit_cast(uint32_t, v);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return v != v ? static_cast<raw>(0x7FC0) : static_cast<raw>(u >> 16);
  }
  static inline op round(op v) { return load(store(v)); }
};

template <>
struct Storage<HalfTag> {
  // The compiler's IEEE binary16 type: conversions round to nearest even, as c10::Half does.
  using raw = _Float16;
  using op = float;
  static inline op load(raw r) { return static_cast<float>(r); }
  static inline raw store(op v) { return static_cast<_Float16>(v); }
  static inline op round(op v) { return static_cast<float>(static_cast<_Float16>(v)); }
};

// Outputs of at least this many bytes are written with non-temporal (streaming) stores. A plain store
// first reads the cache line it writes (write-allocate), so an output far larger than the caches costs a
// read and a write; a streaming store only writes. Smaller outputs are left to the caches, where the next
// layer finds them.
constexpr int64_t kStreamBytes = int64_t(16) << 20;

// Copies n elements from a block-local buffer to the output, streaming when asked (and compiled for AVX2).
template <typename R>
static inline void emit(R* __restrict dst, const R* __restrict src, int64_t n, bool stream) {
  size_t bytes = static_cast<size_t>(n) * sizeof(R);
#ifdef __AVX2__
  if (stream) {
    char* d = reinterpret_cast<char*>(dst);
    const char* s = reinterpret_cast<const char*>(src);
    const size_t head = std::min(bytes, (32 - (reinterpret_cast<uintptr_t>(d) & 31)) & 31);
    std::memcpy(d, s, head);
    d += head, s += head, bytes -= head;
    for (; bytes >= 32; bytes -= 32, d += 32, s += 32)
      _mm256_stream_si256(reinterpret_cast<__m256i*>(d), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
    std::memcpy(d, s, bytes);
    return;
  }
#endif
  (void)stream;
  std::memcpy(dst, src, bytes);
}

// Orders this thread's streaming stores before the thread is joined.
static inline void stream_fence(bool stream) {
#ifdef __AVX2__
  if (stream) _mm_sfence();
#endif
  (void)stream;
}

// a * b + c, fused (one rounding) where the CPU has FMA. Used only in the backward's exp below: the build
// forbids the compiler to fuse anything itself (-ffp-contract=off), so the forward's arithmetic stays
// PyTorch's.
static inline float mul_add(float a, float b, float c) {
#ifdef __FMA__
  return __builtin_fmaf(a, b, c);
#else
  return a * b + c;
#endif
}

// exp for the sigmoid surrogate: Cephes' single-precision polynomial (relative error < 1e-7), in plain
// branch-free arithmetic so that the backward loop vectorises (libm's expf does not without -ffast-math).
static inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds x / ln 2 to an integer in the low bits
  const float km = x * 1.44269504088896341f + magic;
  const float kf = km - magic;
  const int32_t k = __builtin_bit_cast(int32_t, km) - 0x4B400000;
  float r = mul_add(-kf, 0.693359375f, x);  // x - k ln 2 in two steps (Cody-Waite)
  r = mul_add(-kf, -2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = mul_add(p, r, 1.3981999507e-3f);
  p = mul_add(p, r, 8.3334519073e-3f);
  p = mul_add(p, r, 4.1665795894e-2f);
  p = mul_add(p, r, 1.6666665459e-1f);
  p = mul_add(p, r, 5.0000001201e-1f);
  const float y = mul_add(p, r * r, r) + 1.0f;
  return y * __builtin_bit_cast(float, static_cast<uint32_t>(k + 127) << 23);
}

static inline double exp_approx(double x) { return std::exp(x); }

// Surrogate ids: must match spikemlp/neurons/neuron_spec.py.
enum Surrogate : int64_t { kSigmoid = 0, kATan = 1, kTriangle = 2, kStraightThrough = 3 };

template <int64_t SG, typename op>
static inline op surrogate_grad(op u, op alpha, op atan_scale) {
  if constexpr (SG == kSigmoid) {
    const op s = op(1) / (op(1) + exp_approx(-(u * alpha)));
    return (op(1) - s) * s * alpha;
  } else if constexpr (SG == kATan) {
    const op z = atan_scale * u;
    return alpha / op(2) / (op(1) + z * z);
  } else if constexpr (SG == kTriangle) {
    const op g = alpha - alpha * alpha * (u < op(0) ? -u : u);
    return g > op(0) ? g : op(0);
  } else {
    return op(1);
  }
}

using spikemlp::exact_reciprocal;
using spikemlp::kDecayInput;
using spikemlp::kIF;
using spikemlp::kNoDecay;

// Reset after a spike (spikemlp::reset, lif_step.h) in the storage dtype's rounding.
template <typename S, bool HARD>
static inline typename Storage<S>::op reset(typename Storage<S>::op h, typename Storage<S>::op s,
                                            typename Storage<S>::op v_reset, typename Storage<S>::op v_th) {
  using op = typename Storage<S>::op;
  return spikemlp::reset<HARD>(h, s, op(1), v_reset, v_th, [](op u) { return Storage<S>::round(u); });
}

// One time step of a block of n neurons. The constants come in as plain arguments and the arrays as
// restrict pointers, so the compiler sees no aliasing and vectorises the loop. MUL_INV: tau has an exact
// reciprocal, passed as inv_tau (a division per neuron costs more than the rest of the step).
template <typename S, int64_t MODE, bool HARD, bool MUL_INV = false>
static inline void forward_step(const typename Storage<S>::raw* __restrict xt, typename Storage<S>::raw* __restrict st,
                                typename Storage<S>::op* __restrict v, typename Storage<S>::op* __restrict h,
                                int64_t n, typename Storage<S>::op tau, typename Storage<S>::op v_th,
                                typename Storage<S>::op v_reset) {
  using St = Storage<S>;
  using op = typename St::op;
  const op inv_tau = op(1) / tau;
  const auto over_tau = [&](op q) {
    if constexpr (MUL_INV) {
      return q * inv_tau;
    } else {
      return q / tau;
    }
  };
  for (int64_t i = 0; i < n; ++i) {
    const op xi = St::load(xt[i]);
    const op vi = v[i];
    const op hi = spikemlp::charge<MODE>(vi, xi, v_reset, [](op u) { return St::round(u); }, over_tau);
    const op u = St::round(hi - v_th);
    const op s = u >= op(0) ? op(1) : op(0);
    st[i] = St::store(s);
    h[i] = hi;
    v[i] = reset<S, HARD>(hi, s, v_reset, v_th);
  }
}

template <typename S, int64_t MODE, bool HARD>
void forward_kernel(const typename Storage<S>::raw* x, typename Storage<S>::raw* spikes,
                    typename Storage<S>::raw* v_out, int64_t T, int64_t N,
                    double tau_d, double v_th_d, double v_reset_d, int n_threads) {
  using St = Storage<S>;
  using raw = typename St::raw;
  using op = typename St::op;
  const op tau = static_cast<op>(tau_d);
  // PyTorch narrows the Python number to the tensor's dtype in `tensor - number` (but not in `number *
  // tensor`, whose results here, V_th S and V_reset S, are the same either way), and
  // torch.full_like(x, v_reset) rounds the initial membrane: so both constants are used rounded.
  const op v_th = St::round(static_cast<op>(v_th_d));
  const op v_reset = St::round(static_cast<op>(v_reset_d));
  const op v_init = HARD ? v_reset : op(0);
  const bool mul_inv = exact_reciprocal(tau);
  const int64_t n_blocks = (N + kBlock - 1) / kBlock;
  const int64_t outputs = 1 + (v_out != nullptr);
  const bool stream = outputs * T * N * static_cast<int64_t>(sizeof(raw)) >= kStreamBytes;
  spikemlp::parallel_blocks(n_blocks, kBlock * T, n_threads, [=](int64_t b0, int64_t b1) {
    op v[kBlock];
    op h[kBlock];
    alignas(64) raw out[kBlock];
    alignas(64) raw s_local[kBlock];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kBlock;
      const int64_t n = std::min(kBlock, N - i0);
      for (int64_t i = 0; i < n; ++i) v[i] = v_init;
      for (int64_t t = 0; t < T; ++t) {
        if (mul_inv)
          forward_step<S, MODE, HARD, true>(x + t * N + i0, s_local, v, h, n, tau, v_th, v_reset);
        else
          forward_step<S, MODE, HARD>(x + t * N + i0, s_local, v, h, n, tau, v_th, v_reset);
        emit(spikes + t * N + i0, s_local, n, stream);
        if (v_out != nullptr) {
          for (int64_t i = 0; i < n; ++i) out[i] = St::store(v[i]);
          emit(v_out + t * N + i0, out, n, stream);
        }
      }
    }
    stream_fence(stream);
  });
}

// The charge H of every step of one block of n neurons, recomputed from the input X with the forward's
// own arithmetic (so bit for bit the forward's H), into h_block[t * kBlock + i].
template <typename S, bool HARD>
static void recompute_charge(const typename Storage<S>::raw* x, int64_t T, int64_t N, int64_t i0, int64_t n,
                             int64_t mode, typename Storage<S>::op tau, typename Storage<S>::op v_th,
                             typename Storage<S>::op v_reset, typename Storage<S>::raw* h_block) {
  using St = Storage<S>;
  using op = typename St::op;
  using raw = typename St::raw;
  op v[kBlock];
  op h[kBlock];
  alignas(64) raw s_unused[kBlock];
  const bool mul_inv = exact_reciprocal(tau);
  for (int64_t i = 0; i < n; ++i) v[i] = HARD ? v_reset : op(0);
  auto run = [&](auto mode_c) {
    for (int64_t t = 0; t < T; ++t) {
      if (mul_inv)
        forward_step<S, decltype(mode_c)::value, HARD, true>(x + t * N + i0, s_unused, v, h, n, tau, v_th, v_reset);
      else
        forward_step<S, decltype(mode_c)::value, HARD>(x + t * N + i0, s_unused, v, h, n, tau, v_th, v_reset);
      raw* __restrict ht = h_block + t * kBlock;
      for (int64_t i = 0; i < n; ++i) ht[i] = St::store(h[i]);
    }
  };
  if (mode == kIF)
    run(std::integral_constant<int64_t, kIF>{});
  else if (mode == kDecayInput)
    run(std::integral_constant<int64_t, kDecayInput>{});
  else
    run(std::integral_constant<int64_t, kNoDecay>{});
}

// Backward of the whole sequence. Per step (g = incoming gradient, c = gradient carried from t+1):
//   dL/dH[t] = gS[t] sg(u[t]) + (gV[t] + c) dV/dH,  dV/dH = (1 - S) [+ (V_reset - H) sg] (hard) or
//   1 [- V_th sg] (soft; bracketed terms only without detach_reset);
//   dL/dX[t] = dL/dH / tau (decay_input) else dL/dH;  c <- dL/dH - dL/dH / tau (IF: dL/dH).
// With a learnable tau the partial dH[t]/dtau is formed from H[t] and the membrane V[t-1], which is
// recomputed from H[t-1] with the forward's own reset arithmetic.
// The backward reads the forward's input X and recomputes H block by block into a buffer that stays in
// cache, so the forward writes no H at all (one full-size output instead of two, for the same memory).
template <typename S, bool HARD, int64_t SG>
static inline void backward_step(const typename Storage<S>::raw* __restrict gst,
                                 const typename Storage<S>::raw* __restrict ht,
                                 typename Storage<S>::raw* __restrict gxt, typename Storage<S>::op* __restrict carry,
                                 typename Storage<S>::op* __restrict gh, int64_t n, typename Storage<S>::op v_th,
                                 typename Storage<S>::op v_reset, typename Storage<S>::op inv_tau,
                                 typename Storage<S>::op alpha, typename Storage<S>::op atan_scale,
                                 typename Storage<S>::op keep_reset_grad, typename Storage<S>::op divide_by_tau,
                                 typename Storage<S>::op leak) {
  using St = Storage<S>;
  using op = typename St::op;
  for (int64_t i = 0; i < n; ++i) {
    const op hi = St::load(ht[i]);
    const op u = St::round(hi - v_th);
    const op s = u >= op(0) ? op(1) : op(0);
    const op sg = surrogate_grad<SG, op>(u, alpha, atan_scale);
    op dv_dh;
    if constexpr (HARD) {
      dv_dh = (op(1) - s) + keep_reset_grad * ((v_reset - hi) * sg);
    } else {
      dv_dh = op(1) - keep_reset_grad * (v_th * sg);
    }
    const op g = St::load(gst[i]) * sg + carry[i] * dv_dh;
    const op g_over_tau = g * inv_tau;
    gxt[i] = St::store(g_over_tau * divide_by_tau + g * (op(1) - divide_by_tau));
    carry[i] = g - g_over_tau * leak;
    gh[i] = g;
  }
}

template <typename S, bool HARD, int64_t SG>
void backward_kernel(const typename Storage<S>::raw* grad_s, const typename Storage<S>::raw* grad_v,
                     const typename Storage<S>::raw* x, typename Storage<S>::raw* grad_x,
                     int64_t T, int64_t N, int64_t mode, double tau_d, double v_th_d, double v_reset_d, bool detach_reset,
                     double alpha_d, double atan_scale_d, double* tau_grad_partials, int n_threads) {
  using St = Storage<S>;
  using raw = typename St::raw;
  using op = typename St::op;
  const op tau = static_cast<op>(tau_d);
  const op v_th = St::round(static_cast<op>(v_th_d));  // as in the forward
  const op v_reset = St::round(static_cast<op>(v_reset_d));
  const op alpha = static_cast<op>(alpha_d);
  const op atan_scale = static_cast<op>(atan_scale_d);
  const op v_init = HARD ? v_reset : op(0);
  // The gradient is scaled by 1/tau rather than divided by tau: a division per neuron-step costs more than
  // the rest of the step, and the product differs from the quotient by at most one unit in the last place
  // (none when tau is a power of two, as in the default tau = 2).
  const op inv_tau = op(1) / tau;
  // 0/1 multipliers instead of branches keep the inner loop branch-free (and vectorisable); multiplying
  // by 0 or 1 and adding 0 are exact, so the selected value is unchanged.
  const op keep_reset_grad = detach_reset ? op(0) : op(1);
  const op divide_by_tau = mode == kDecayInput ? op(1) : op(0);
  const op leak = mode != kIF ? op(1) : op(0);
  const int64_t n_blocks = (N + kBlock - 1) / kBlock;
  const bool stream = T * N * static_cast<int64_t>(sizeof(raw)) >= kStreamBytes;
  spikemlp::parallel_blocks(n_blocks, kBlock * T, n_threads, [=](int64_t b0, int64_t b1) {
    op carry[kBlock];
    op gh[kBlock];
    alignas(64) raw gx_local[kBlock];
    std::vector<raw> h_block(T * kBlock);  // H[t] of the block at h_block[t * kBlock]
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kBlock;
      const int64_t n = std::min(kBlock, N - i0);
      recompute_charge<S, HARD>(x, T, N, i0, n, mode, tau, v_th, v_reset, h_block.data());
      double tau_acc = 0.0;
      for (int64_t i = 0; i < n; ++i) carry[i] = op(0);
      for (int64_t t = T - 1; t >= 0; --t) {
        const raw* ht = h_block.data() + t * kBlock;
        if (grad_v != nullptr) {
          const raw* __restrict gvt = grad_v + t * N + i0;
          for (int64_t i = 0; i < n; ++i) carry[i] = St::load(gvt[i]) + carry[i];
        }
        backward_step<S, HARD, SG>(grad_s + t * N + i0, ht, gx_local, carry, gh, n, v_th, v_reset, inv_tau, alpha,
                                   atan_scale, keep_reset_grad, divide_by_tau, leak);
        emit(grad_x + t * N + i0, gx_local, n, stream);
        if (tau_grad_partials != nullptr) {
          const raw* __restrict hprev = t > 0 ? ht - kBlock : nullptr;
          for (int64_t i = 0; i < n; ++i) {
            const op hi = St::load(ht[i]);
            op vprev = v_init;
            if (hprev != nullptr) {
              const op hp = St::load(hprev[i]);
              const op sp = St::round(hp - v_th) >= op(0) ? op(1) : op(0);
              vprev = reset<S, HARD>(hp, sp, v_reset, v_th);
            }
            // decay_input: H = V + c with c = (X - (V - V_reset)) / tau, so dH/dtau = -c / tau.
            // otherwise:   H = V - (V - V_reset) / tau + X,            so dH/dtau = (V - V_reset) / tau^2.
            const op dh_dtau = divide_by_tau != op(0) ? -(hi - vprev) / tau : (vprev - v_reset) / (tau * tau);
            tau_acc += static_cast<double>(gh[i] * dh_dtau);
          }
        }
      }
      if (tau_grad_partials != nullptr) tau_grad_partials[b] = tau_acc;
    }
    stream_fence(stream);
  });
}

// Template selection for the runtime flags.
template <typename S>
int forward_dtype(const void* x, void* spikes, void* v, int64_t T, int64_t N, int64_t mode, int hard,
                  double tau, double v_th, double v_reset, int n_threads) {
  using raw = typename Storage<S>::raw;
  auto run = [&](auto mode_c, auto hard_c) {
    forward_kernel<S, decltype(mode_c)::value, decltype(hard_c)::value>(
        static_cast<const raw*>(x), static_cast<raw*>(spikes), static_cast<raw*>(v), T, N,
        tau, v_th, v_reset, n_threads);
  };
  auto with_hard = [&](auto mode_c) {
    if (hard)
      run(mode_c, std::true_type{});
    else
      run(mode_c, std::false_type{});
  };
  switch (mode) {
    case kIF:
      with_hard(std::integral_constant<int64_t, kIF>{});
      return 0;
    case kDecayInput:
      with_hard(std::integral_constant<int64_t, kDecayInput>{});
      return 0;
    case kNoDecay:
      with_hard(std::integral_constant<int64_t, kNoDecay>{});
      return 0;
    default:
      return 2;
  }
}

template <typename S>
int backward_dtype(const void* grad_s, const void* grad_v, const void* x, void* grad_x, int64_t T, int64_t N,
                   int64_t mode, int hard, int detach_reset, int64_t surrogate, double tau, double v_th,
                   double v_reset, double alpha, double atan_scale, double* tau_partials, int n_threads) {
  using raw = typename Storage<S>::raw;
  if (mode < kIF || mode > kNoDecay) return 2;
  auto run = [&](auto hard_c, auto sg_c) {
    backward_kernel<S, decltype(hard_c)::value, decltype(sg_c)::value>(
        static_cast<const raw*>(grad_s), static_cast<const raw*>(grad_v), static_cast<const raw*>(x),
        static_cast<raw*>(grad_x), T, N, mode, tau, v_th, v_reset, detach_reset != 0, alpha, atan_scale,
        tau_partials, n_threads);
  };
  auto with_sg = [&](auto hard_c) {
    switch (surrogate) {
      case kSigmoid:
        run(hard_c, std::integral_constant<int64_t, kSigmoid>{});
        return 0;
      case kATan:
        run(hard_c, std::integral_constant<int64_t, kATan>{});
        return 0;
      case kTriangle:
        run(hard_c, std::integral_constant<int64_t, kTriangle>{});
        return 0;
      case kStraightThrough:
        run(hard_c, std::integral_constant<int64_t, kStraightThrough>{});
        return 0;
      default:
        return 3;
    }
  };
  return hard ? with_sg(std::true_type{}) : with_sg(std::false_type{});
}

// Storage dtype codes: must match DTYPE_CODES in spikemlp/ops/lif.py.
enum DType : int { kFloat32 = 0, kFloat64 = 1, kBFloat16 = 2, kFloat16 = 3 };

}  // namespace

// The C interface. Tensors are contiguous [T, N] buffers of one dtype; v, grad_v and tau_partials may be
// null (not wanted / not given). The backward takes the forward's input X. tau_partials, when given, receives one float64 per block of kBlock
// neurons (spikemlp_lif_block_size()), summed by the caller. Returns 0, or 1 (bad dtype), 2 (bad mode),
// 3 (bad surrogate).
extern "C" {

int64_t spikemlp_lif_block_size() { return kBlock; }

int spikemlp_lif_forward(int dtype, const void* x, void* spikes, void* v, int64_t T, int64_t N, int64_t mode,
                         int hard, double tau, double v_th, double v_reset, int n_threads) {
  switch (dtype) {
    case kFloat32:
      return forward_dtype<float>(x, spikes, v, T, N, mode, hard, tau, v_th, v_reset, n_threads);
    case kFloat64:
      return forward_dtype<double>(x, spikes, v, T, N, mode, hard, tau, v_th, v_reset, n_threads);
    case kBFloat16:
      return forward_dtype<BFloat16Tag>(x, spikes, v, T, N, mode, hard, tau, v_th, v_reset, n_threads);
    case kFloat16:
      return forward_dtype<HalfTag>(x, spikes, v, T, N, mode, hard, tau, v_th, v_reset, n_threads);
    default:
      return 1;
  }
}

int spikemlp_lif_backward(int dtype, const void* grad_s, const void* grad_v, const void* x, void* grad_x, int64_t T,
                          int64_t N, int64_t mode, int hard, int detach_reset, int64_t surrogate, double tau,
                          double v_th, double v_reset, double alpha, double atan_scale, double* tau_partials,
                          int n_threads) {
#define SPIKEMLP_BACKWARD(S)                                                                                   \
  backward_dtype<S>(grad_s, grad_v, x, grad_x, T, N, mode, hard, detach_reset, surrogate, tau, v_th, v_reset, \
                    alpha, atan_scale, tau_partials, n_threads)
  switch (dtype) {
    case kFloat32:
      return SPIKEMLP_BACKWARD(float);
    case kFloat64:
      return SPIKEMLP_BACKWARD(double);
    case kBFloat16:
      return SPIKEMLP_BACKWARD(BFloat16Tag);
    case kFloat16:
      return SPIKEMLP_BACKWARD(HalfTag);
    default:
      return 1;
  }
#undef SPIKEMLP_BACKWARD
}

}  // extern "C"
