// Spike-driven matrix product for the CPU: out = epilogue(x @ W^T + bias), most entries of x being zero.
//
// A synaptic layer of MLP-SPE sees spikes: each input is 0 or 1, and at the firing rates the models run
// at (10-35%) most are 0. A dense GEMM multiplies every weight by every input; here each output row is
// bias + the sum of the weight rows Wt[k] of its active inputs k, so the work falls with the firing rate
// and, for 0/1 inputs, no weight is multiplied (the multiplication-free inference of the paper, as a CPU
// runs it). Inputs that are not 0/1 are still computed correctly: a nonzero value v adds v * Wt[k] (a
// multiplication and an addition, each rounded, as in an unfused GEMM).
//
// Input. Rows n = m * P + p (m < M images, p < P positions), K input channels given as up to three
// segments (the parts of a concatenation, read where they lie): channel k of segment s at
// base[s] + m * sm[s] + p * sp[s] + k * sk (sk common to the segments). So a contiguous [rows, K] matrix (sk = 1) and the
// NCHW spikes of a 1x1 convolution (k = channel, p = pixel, sp = 1, sk = H * W: "planar") are read in
// place, without a transpose or concatenation copy.
// Weights: Wt is W transposed and packed, [K, Dp] with Dp a multiple of 16 (zero columns after D).
// Epilogue (optional, as BatchNorm in inference): y = y * col_scale[d] + col_shift[d] (per output
// channel), then y = y * row_scale[p] + row_shift[p] (per position, MLP-SPE's per-token BatchNorm).
// Output: [M, P, D] (rows) or [M, D, P] (planar, NCHW).
// Residual (optional): after the epilogue, y = y + addend, addend a contiguous tensor in the output
// layout (MLP-SPE's skips from the stage's state h add here); with a neuron, `values` (optional, the
// output layout) receives these y, the neuron's input, as well as the spikes.
//
// Inputs may also be 0/1 bytes (uint8), as the fused neuron below writes them.
//
// Row inputs: the active inputs of a row are listed (an AVX-512 compress where sk = 1, else branch free),
// then each tile of up to 128 output columns is accumulated in registers over that list: one load and one
// add per 16 floats per active input, where a dense GEMM does one FMA per 16 per input.
// Planar inputs: 16 pixels at a time; one vector load per channel gives that channel's spikes for the 16
// pixels as a bit mask, and the masks are turned into each pixel's list of active inputs.
// Either way each output sums its terms in the order of k, so the two paths give the same values, and
// these differ from a GEMM's only by rounding (none when the sums are exact).
// Grouped sums (optional, see to_groups): dense rows add precomputed sums of up to four weight rows.
// Neuron (optional, see finish): the outputs charge an LIF neuron over T steps in the epilogue, and only
// its spikes are stored, as bytes: the layer's outputs never reach memory.
//
// Depends on the C++ standard library only (spikemlp/ops/_build.py builds it).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "lif_step.h"
#include "parallel.h"

namespace {

constexpr int kMaxSegments = 3;
constexpr int64_t kRows = 64;  // rows per block: each column tile of the weights is reused by all of them

// 64 bytes of S (16 floats, 8 doubles) as one vector; GCC/Clang lower it to the widest registers the
// build allows (one AVX-512 register, two AVX2 registers, ...). aligned(sizeof(S)): unaligned loads.
template <typename S>
using Vec [[gnu::vector_size(64), gnu::aligned(sizeof(S))]] = S;

// The neuron of the fused epilogue (lif_step.h's arithmetic, as the fused LIF kernel's): charge mode
// (spikemlp::Charge), hard or soft reset.
struct Neuron {
  int64_t T;  // time steps: image m = t * (M / T) + b
  int mode;
  bool hard;
  double tau, v_th, v_reset;
};

template <typename S>
struct Problem {
  const void* base[kMaxSegments];  // I (the input type: S or uint8_t) at each
  int64_t channels[kMaxSegments];
  int64_t sm[kMaxSegments];  // image and position strides of each segment
  int64_t sp[kMaxSegments];
  int n_segments;
  int64_t M, P, K, sk;
  const S* wt;
  const S* table;  // grouped sums [ceil(K / 4) * 16, Dp], or null (see to_groups)
  const S* bias;  // Dp entries, or null
  int64_t D, Dp;
  const S* col_scale;  // Dp entries each, or null
  const S* col_shift;
  const S* row_scale;  // P entries each, or null
  const S* row_shift;
  const S* addend;    // added after the epilogue (output layout), or null
  S* values;          // with a neuron: its inputs y are stored here too (output layout), or null
  S* out;             // the outputs, or (neuron) null and:
  uint8_t* spikes;    // the neuron's spikes, 0/1 bytes, in the output layout
  const Neuron* neuron;
  S tau, inv_tau, v_th, v_reset;  // the neuron's constants in S (see lif_cpu.cpp: rounded as PyTorch does)
  bool mul_inv;                   // 1 / tau exact: multiply instead of dividing (the same numbers)
  bool planar_out;
};

// Appends the nonzero inputs among `count` channels at `row` (stride sk), numbered from k0: their k to
// idx, their values to val; returns how many, and clears *binary if one of them is not 1.
template <typename S, typename I>
inline int64_t active_inputs(const I* row, int64_t count, int64_t sk, int64_t k0, int32_t* idx, S* val,
                             bool* binary) {
  int64_t n = 0;
  bool all_one = true;
  int64_t k = 0;
#ifdef __AVX512F__
  if constexpr (sizeof(I) == 1) {
    if (sk == 1) {
      // 64 inputs per load; the set bits of the nonzero mask are the active inputs, all 1 (a load with
      // another nonzero byte goes to the scalar loop below), so their values are filled in one pass.
      for (; k + 64 <= count; k += 64) {
        const __m512i v = _mm512_loadu_si512(row + k);
        uint64_t nz = _mm512_test_epi8_mask(v, v);
        if (_mm512_mask_cmpneq_epi8_mask(nz, v, _mm512_set1_epi8(1))) break;
        for (; nz; nz &= nz - 1) idx[n++] = static_cast<int32_t>(k0 + k + __builtin_ctzll(nz));
      }
      std::fill(val, val + n, S(1));
    }
  }
  if constexpr (sizeof(I) == 4 && sizeof(S) == 4) {
    if (sk == 1) {
      const __m512i step = _mm512_set1_epi32(16);
      __m512i ks = _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                    _mm512_set1_epi32(static_cast<int32_t>(k0)));
      const __m512 one = _mm512_set1_ps(1.0f);
      __mmask16 not_one = 0;
      for (; k + 16 <= count; k += 16) {
        const __m512 v = _mm512_loadu_ps(reinterpret_cast<const float*>(row) + k);
        const __mmask16 nz = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        not_one |= _mm512_mask_cmp_ps_mask(nz, v, one, _CMP_NEQ_UQ);
        // Compress in registers, then a full store (the buffers have 16 spare entries): the
        // memory-destination compress is microcoded and slow on some CPUs (AMD Zen 4).
        _mm512_storeu_si512(idx + n, _mm512_maskz_compress_epi32(nz, ks));
        _mm512_storeu_ps(reinterpret_cast<float*>(val) + n, _mm512_maskz_compress_ps(nz, v));
        n += __builtin_popcount(static_cast<unsigned>(nz));
        ks = _mm512_add_epi32(ks, step);
      }
      all_one = not_one == 0;
    }
  }
#endif
  for (; k < count; ++k) {
    const S v = static_cast<S>(row[k * sk]);
    idx[n] = static_cast<int32_t>(k0 + k);
    val[n] = v;
    all_one &= (v == S(0)) | (v == S(1));
    n += (v != S(0));
  }
  *binary = *binary && all_one;
  return n;
}

// Epilogue and store of columns [d0, d0 + nv vectors) of output row (m, p), accumulated in acc (aligned).
// With a neuron, mem is this row's membrane (Dp entries, aligned): the outputs charge it, and the
// spikes (0/1 bytes) are stored instead of the outputs, with csrc/lif_cpu.cpp's arithmetic.
template <typename S>
inline void finish(const Problem<S>& q, S* acc, int64_t nv, int64_t d0, int64_t m, int64_t p, S* mem, S* staged) {
  using V = Vec<S>;
  constexpr int kLanes = 64 / sizeof(S);
  V* a = reinterpret_cast<V*>(acc);
  if (q.col_scale) {
    const V* cs = reinterpret_cast<const V*>(q.col_scale + d0);
    const V* ct = reinterpret_cast<const V*>(q.col_shift + d0);
    for (int64_t v = 0; v < nv; ++v) a[v] = a[v] * cs[v] + ct[v];
  }
  if (q.row_scale) {
    const S rs = q.row_scale[p], rt = q.row_shift[p];
    for (int64_t v = 0; v < nv; ++v) a[v] = a[v] * rs + rt;
  }
  const int64_t width = std::min<int64_t>(nv * kLanes, q.D - d0);
  // The residual and the kept values, in the output layout: a row's channels lie P apart when planar.
  const int64_t at = q.planar_out ? (m * q.D + d0) * q.P + p : (m * q.P + p) * q.D + d0;
  const int64_t step = q.planar_out ? q.P : 1;
  if (q.addend)
    for (int64_t t = 0; t < width; ++t) acc[t] += q.addend[at + t * step];
  if (q.values)
    for (int64_t t = 0; t < width; ++t) q.values[at + t * step] = acc[t];
  if (q.neuron) {
    V* vm = reinterpret_cast<V*>(mem + d0);
    const V zero{}, one = zero + S(1), v_reset = zero + q.v_reset, v_th = zero + q.v_th;
    const auto same = [](V u) { return u; };  // float and double: no rounding to a storage dtype
    const auto over_tau = [&q](V u) { return q.mul_inv ? u * q.inv_tau : u / q.tau; };
    for (int64_t v = 0; v < nv; ++v) {
      const V x = a[v], vi = vm[v];
      const V h = q.neuron->mode == spikemlp::kIF         ? spikemlp::charge<spikemlp::kIF>(vi, x, v_reset, same, over_tau)
                  : q.neuron->mode == spikemlp::kDecayInput ? spikemlp::charge<spikemlp::kDecayInput>(vi, x, v_reset, same, over_tau)
                                                          : spikemlp::charge<spikemlp::kNoDecay>(vi, x, v_reset, same, over_tau);
      const V s = (h - v_th) >= zero ? one : zero;
      vm[v] = q.neuron->hard ? spikemlp::reset<true>(h, s, one, v_reset, v_th, same)
                             : spikemlp::reset<false>(h, s, one, v_reset, v_th, same);
      a[v] = s;
    }
    uint8_t* dst = q.spikes + at;
    for (int64_t t = 0; t < width; ++t) dst[t * step] = static_cast<uint8_t>(acc[t] != S(0));
    return;
  }
  if (staged) {  // planar output through the block's staging buffer (see flush_staged)
    for (int64_t t = 0; t < width; ++t) staged[t * kRows] = acc[t];
  } else if (q.planar_out) {
    S* dst = q.out + (m * q.D + d0) * q.P + p;
    for (int64_t t = 0; t < width; ++t) dst[t * q.P] = acc[t];
  } else {
    S* dst = q.out + (m * q.P + p) * q.D + d0;
    for (int64_t t = 0; t < width; ++t) dst[t] = acc[t];
  }
}

constexpr int kPix = 16;        // pixels per spike mask (planar input)
constexpr int kTile = 8;        // vectors per column tile: 128 floats (64 doubles), eight AVX-512 registers

// The spikes of channels [0, count) at xb (stride sk) for npix pixels as bit masks; false if a value
// is neither 0 nor 1.
template <typename S>
bool pixel_masks(const S* xb, int64_t count, int64_t sk, int64_t npix, uint32_t* masks) {
  int64_t k = 0;
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  if constexpr (sizeof(S) == 1) {
    if (npix == kPix) {
      // Bytes (the fused neuron's spikes): the 16 pixels of a channel in one 128-bit load.
      for (; k < count; ++k) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xb + k * sk));
        const uint32_t nz = _mm_test_epi8_mask(v, v);
        if (_mm_mask_cmpneq_epi8_mask(static_cast<__mmask16>(nz), v, _mm_set1_epi8(1))) return false;
        masks[k] = nz;
      }
    }
  }
#endif
#ifdef __AVX512F__
  if constexpr (sizeof(S) >= 4) {
  if (npix == kPix) {
    for (; k < count; ++k) {
      const S* xk = xb + k * sk;
      // The next block's pixels of this channel: K streams are too many for the hardware prefetcher.
      _mm_prefetch(reinterpret_cast<const char*>(xk + 2 * kPix), _MM_HINT_T0);
      uint32_t nz, bad;
      if constexpr (sizeof(S) == 4) {
        const __m512 v = _mm512_loadu_ps(reinterpret_cast<const float*>(xk));
        const __mmask16 n = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        nz = n;
        bad = _mm512_mask_cmp_ps_mask(n, v, _mm512_set1_ps(1.0f), _CMP_NEQ_UQ);
      } else {
        const __m512d lo = _mm512_loadu_pd(reinterpret_cast<const double*>(xk));
        const __m512d hi = _mm512_loadu_pd(reinterpret_cast<const double*>(xk) + 8);
        const __mmask8 nlo = _mm512_cmp_pd_mask(lo, _mm512_setzero_pd(), _CMP_NEQ_UQ);
        const __mmask8 nhi = _mm512_cmp_pd_mask(hi, _mm512_setzero_pd(), _CMP_NEQ_UQ);
        nz = nlo | (static_cast<uint32_t>(nhi) << 8);
        bad = _mm512_mask_cmp_pd_mask(nlo, lo, _mm512_set1_pd(1.0), _CMP_NEQ_UQ) |
              (static_cast<uint32_t>(_mm512_mask_cmp_pd_mask(nhi, hi, _mm512_set1_pd(1.0), _CMP_NEQ_UQ)) << 8);
      }
      if (bad) return false;
      masks[k] = nz;
    }
  }
  }
#endif
  for (; k < count; ++k) {
    const S* xk = xb + k * sk;
    uint32_t nz = 0, bad = 0;
    for (int64_t i = 0; i < npix; ++i) {
      nz |= static_cast<uint32_t>(xk[i] != S(0)) << i;
      bad |= static_cast<uint32_t>((xk[i] != S(0)) & (xk[i] != S(1))) << i;
    }
    if (bad) return false;
    masks[k] = nz;
  }
  return true;
}

// The active inputs of a block of rows, one list each (idx, and the values where a row is not 0/1).
template <typename S>
struct BlockLists {
  int64_t stride;  // entries per row list: K + 16 (the compress stores a whole vector)
  std::vector<int32_t> idx;
  std::vector<S> val;
  std::vector<uint32_t> masks;
  int64_t count[kRows];
  bool binary[kRows];
  bool grouped[kRows];  // the list holds table entries (to_groups), not input channels
  explicit BlockLists(int64_t K) : stride(K + 16), idx(kRows * stride), val(kRows * stride), masks(K) {}
};

// Lists of row (m, p), read one row at a time (any strides).
template <typename S, typename I>
void list_row(const Problem<S>& q, int64_t m, int64_t p, BlockLists<S>& L, int64_t j) {
  bool binary = true;
  int64_t n = 0, k0 = 0;
  for (int s = 0; s < q.n_segments; ++s) {
    n += active_inputs(static_cast<const I*>(q.base[s]) + m * q.sm[s] + p * q.sp[s], q.channels[s], q.sk, k0,
                       L.idx.data() + j * L.stride + n,
                       L.val.data() + j * L.stride + n, &binary);
    k0 += q.channels[s];
  }
  L.count[j] = n, L.binary[j] = binary;
}

// Lists of pixels p0 .. p0 + npix (<= kPix) of image m, planar input: one vector load per channel gives
// its spikes for all the pixels as a bit mask (instead of npix strided reads), and each set bit appends
// k to that pixel's list, so the lists come out in the order of k as list_row's. Falls back to list_row
// for the pixels if an input is not 0/1.
template <typename S, typename I>
void list_pixels(const Problem<S>& q, int64_t m, int64_t p0, int64_t npix, BlockLists<S>& L, int64_t j0) {
  int64_t k0 = 0;
  for (int s = 0; s < q.n_segments; ++s) {
    if (!pixel_masks(static_cast<const I*>(q.base[s]) + m * q.sm[s] + p0, q.channels[s], q.sk, npix,
                     L.masks.data() + k0)) {
      for (int64_t i = 0; i < npix; ++i) list_row<S, I>(q, m, p0 + i, L, j0 + i);
      return;
    }
    k0 += q.channels[s];
  }
  for (int64_t i = 0; i < npix; ++i) L.count[j0 + i] = 0, L.binary[j0 + i] = true;
  int32_t* idx = L.idx.data() + j0 * L.stride;
#ifdef __AVX512F__
  // Pixel by pixel: the bit of pixel i in 16 channels' masks at once, and the channels whose bit is set
  // compressed into its list (a register compress and a full store: the lists have 16 spare entries).
  // No per-spike loop, and each list's length stays in a register.
  const uint32_t* masks = L.masks.data();
  for (int64_t i = 0; i < npix; ++i) {
    int32_t* dst = idx + i * L.stride;
    const __m512i bit = _mm512_set1_epi32(static_cast<int32_t>(1u << i));
    __m512i ks = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t n = 0;
    for (int64_t k = 0; k < q.K; k += 16) {
      const __mmask16 valid = q.K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (q.K - k)) - 1);
      const __mmask16 on = _mm512_mask_test_epi32_mask(valid, _mm512_maskz_loadu_epi32(valid, masks + k), bit);
      _mm512_storeu_si512(dst + n, _mm512_maskz_compress_epi32(on, ks));
      n += __builtin_popcount(static_cast<unsigned>(on));
      ks = _mm512_add_epi32(ks, _mm512_set1_epi32(16));
    }
    L.count[j0 + i] = n;
  }
#else
  for (int64_t k = 0; k < q.K; ++k)
    for (uint32_t bits = L.masks[k]; bits; bits &= bits - 1) {
      const int i = __builtin_ctz(bits);
      idx[i * L.stride + L.count[j0 + i]++] = static_cast<int32_t>(k);
    }
#endif
}

// Grouped sums. With a table (q.table), table row 16 * g + c holds the sum of the weight rows of the
// inputs 4 g + b for the bits b of c (added in the order of b), so a row whose active inputs among
// 4 g .. 4 g + 3 form the pattern c adds that one table row instead of up to four weight rows: at half
// of the inputs active, about half as many additions (and still only additions). The table is 4x the
// weights, so it pays only on dense enough rows (kGroupedMin).
constexpr int64_t kGroupedMinPercent = 20;  // rows with at least this share of inputs active use the table

// Rewrites row j's list of active inputs (in the order of k) as its list of table entries, in place.
template <typename S>
void to_groups(BlockLists<S>& L, int64_t j) {
  int32_t* idx = L.idx.data() + j * L.stride;
  const int64_t count = L.count[j];
  int64_t n = 0;
  int32_t group = -1, code = 0;
  for (int64_t c = 0; c < count; ++c) {
    const int32_t k = idx[c];
    if ((k >> 2) != group) {
      // n <= c here: each entry written stands for at least one input already read.
      if (group >= 0) idx[n++] = group * 16 + code;
      group = k >> 2, code = 0;
    }
    code |= 1 << (k & 3);
  }
  if (group >= 0) idx[n++] = group * 16 + code;
  L.count[j] = n;
  L.grouped[j] = true;
}

// Row j takes the table if it is binary and dense enough. The choice depends on the row's inputs only
// (not on the block or layout), so every layout gives the same values.
template <typename S>
void choose_walk(const Problem<S>& q, BlockLists<S>& L, int64_t j) {
  L.grouped[j] = false;
  if (q.table && L.binary[j] && L.count[j] * 100 >= kGroupedMinPercent * q.K) to_groups(L, j);
}

// Columns [d0, d0 + kV vectors) of the block's rows j < nr (row j is (m[j], p[j])). The weights are
// taken kChunk input channels at a time (kChunk x kV vectors: 16 KiB, in L1), and every row of a group
// adds its active inputs of the chunk before the next chunk is loaded: each weight row is read from
// L2 once per group, not once per active input (which would bound the sums by L2 bandwidth). Per row
// the sums still run in the order of k.
constexpr int64_t kGroup = 16;          // rows whose accumulators (kGroup x kV vectors) stay in L1
constexpr int64_t kChunkBytes = 16384;  // weight rows per chunk: this many bytes of the tile
constexpr int64_t kMinActivesPerChunk = 6;

// Columns [d0, d0 + kV vectors) of the block's rows, each row over its whole list at once (the
// accumulators stay in registers; the weight rows come from L2): for sparse rows, where few active
// inputs fall in each chunk of tile_rows_chunked.
template <typename S, int kV>
void tile_rows_whole(const Problem<S>& q, const S* weights, const BlockLists<S>& L, const int64_t* sel,
                     int64_t nr, const int64_t* ms, const int64_t* ps, int64_t d0, S* acc, S* mem, S* stage) {
  using V = Vec<S>;
  const V* bias = q.bias ? reinterpret_cast<const V*>(q.bias + d0) : nullptr;
  for (int64_t i = 0; i < nr; ++i) {
    const int64_t j = sel[i];
    const int32_t* idx = L.idx.data() + j * L.stride;
    const S* val = L.val.data() + j * L.stride;
    const int64_t n = L.count[j];
    V r[kV];
    for (int v = 0; v < kV; ++v) r[v] = bias ? bias[v] : V{};
    if (L.binary[j]) {
      for (int64_t c = 0; c < n; ++c) {
        const V* w = reinterpret_cast<const V*>(weights + static_cast<int64_t>(idx[c]) * q.Dp + d0);
        for (int v = 0; v < kV; ++v) r[v] += w[v];
      }
    } else {
      for (int64_t c = 0; c < n; ++c) {
        const V* w = reinterpret_cast<const V*>(weights + static_cast<int64_t>(idx[c]) * q.Dp + d0);
        const S x = val[c];
        for (int v = 0; v < kV; ++v) r[v] += x * w[v];
      }
    }
    for (int v = 0; v < kV; ++v) reinterpret_cast<V*>(acc)[v] = r[v];
    finish(q, acc, kV, d0, ms[j], ps[j], mem ? mem + j * q.Dp : nullptr, stage ? stage + j : nullptr);
  }
}

template <typename S, int kV>
void tile_rows(const Problem<S>& q, const BlockLists<S>& L, const int64_t* sel, int64_t nr, const int64_t* ms,
               const int64_t* ps, int64_t d0, S* acc, S* mem, S* stage) {
  using V = Vec<S>;
  constexpr int kLanes = 64 / sizeof(S);
  const int64_t chunk = std::max<int64_t>(16, kChunkBytes / (kV * 64));
  // Chunks pay (L1 instead of L2 reads per active input) when rows have several active inputs per
  // chunk; otherwise reloading the accumulators for every chunk costs more (measured: the switch at
  // about 6 per chunk).
  int64_t actives = 0;
  for (int64_t i = 0; i < nr; ++i) actives += L.count[sel[i]];
  if (actives * chunk < kMinActivesPerChunk * nr * q.K)
    return tile_rows_whole<S, kV>(q, q.wt, L, sel, nr, ms, ps, d0, acc, mem, stage);
  const V* bias = q.bias ? reinterpret_cast<const V*>(q.bias + d0) : nullptr;
  V* a = reinterpret_cast<V*>(acc);
  for (int64_t g0 = 0; g0 < nr; g0 += kGroup) {
    const int64_t ng = std::min(kGroup, nr - g0);
    int64_t cursor[kGroup];
    for (int64_t j = 0; j < ng; ++j) {
      cursor[j] = 0;
      for (int v = 0; v < kV; ++v) a[j * kV + v] = bias ? bias[v] : V{};
    }
    for (int64_t k_end = chunk; k_end - chunk < q.K; k_end += chunk) {
      for (int64_t j = 0; j < ng; ++j) {
        const int64_t row = sel[g0 + j];
        const int32_t* idx = L.idx.data() + row * L.stride;
        const S* val = L.val.data() + row * L.stride;
        const int64_t n = L.count[row];
        int64_t c = cursor[j];
        if (c >= n || idx[c] >= k_end) continue;
        V r[kV];
        for (int v = 0; v < kV; ++v) r[v] = a[j * kV + v];
        if (L.binary[row]) {
          for (; c < n && idx[c] < k_end; ++c) {
            const V* w = reinterpret_cast<const V*>(q.wt + static_cast<int64_t>(idx[c]) * q.Dp + d0);
            for (int v = 0; v < kV; ++v) r[v] += w[v];
          }
        } else {
          for (; c < n && idx[c] < k_end; ++c) {
            const V* w = reinterpret_cast<const V*>(q.wt + static_cast<int64_t>(idx[c]) * q.Dp + d0);
            const S x = val[c];
            for (int v = 0; v < kV; ++v) r[v] += x * w[v];
          }
        }
        for (int v = 0; v < kV; ++v) a[j * kV + v] = r[v];
        cursor[j] = c;
      }
    }
    for (int64_t j = 0; j < ng; ++j) finish(q, acc + j * kV * kLanes, kV, d0, ms[sel[g0 + j]], ps[sel[g0 + j]],
             mem ? mem + sel[g0 + j] * q.Dp : nullptr, stage ? stage + sel[g0 + j] : nullptr);
  }
}

// Planar output: a row's outputs lie P apart, so storing them one by one touches a cache line per output
// channel per row. The tile's outputs are staged instead (column c of block row j at stage[c * kRows + j],
// in L1) and written here as runs of consecutive positions of one image: contiguous copies.
template <typename S>
void flush_staged(const Problem<S>& q, int64_t nr, const int64_t* ms, const int64_t* ps, int64_t d0, int64_t cols,
                  const S* stage) {
  const int64_t width = std::min(cols, q.D - d0);
  for (int64_t j0 = 0, j1; j0 < nr; j0 = j1) {
    for (j1 = j0 + 1; j1 < nr && ms[j1] == ms[j0] && ps[j1] == ps[j0] + (j1 - j0);) ++j1;
    S* dst = q.out + (ms[j0] * q.D + d0) * q.P + ps[j0];
    for (int64_t c = 0; c < width; ++c) std::copy(stage + c * kRows + j0, stage + c * kRows + j1, dst + c * q.P);
  }
}

// Columns [d0, d0 + kV vectors) of the block's rows: the chunked or whole walk over the weights (plain
// rows), the whole walk over the table (grouped rows), then the staged planar outputs.
template <typename S, int kV>
void tile(const Problem<S>& q, const BlockLists<S>& L, int64_t nr, const int64_t* plain, int64_t n_plain,
          const int64_t* grouped, int64_t n_grouped, const int64_t* ms, const int64_t* ps, int64_t d0, S* acc, S* mem,
          S* stage) {
  constexpr int kLanes = 64 / sizeof(S);
  if (n_plain) tile_rows<S, kV>(q, L, plain, n_plain, ms, ps, d0, acc, mem, stage);
  if (n_grouped) tile_rows_whole<S, kV>(q, q.table, L, grouped, n_grouped, ms, ps, d0, acc, mem, stage);
  if (stage) flush_staged(q, nr, ms, ps, d0, kV * kLanes, stage);
}

// A block: list the rows' active inputs, then go over the weights one column tile at a time, all rows
// per tile, so that the tile (K x 128 columns: 468 KiB at K = 936) stays in L2 while it is reused.
template <typename S>
void block_product(const Problem<S>& q, int64_t nr, const int64_t* ms, const int64_t* ps, BlockLists<S>& L,
                   S* acc, S* mem, S* stage) {
  constexpr int kLanes = 64 / sizeof(S);
  int64_t plain[kRows], grouped[kRows], n_plain = 0, n_grouped = 0;
  for (int64_t j = 0; j < nr; ++j) {
    choose_walk(q, L, j);
    if (L.grouped[j]) grouped[n_grouped++] = j;
    else plain[n_plain++] = j;
  }
  int64_t d0 = 0;
  for (; d0 + kTile * kLanes <= q.Dp; d0 += kTile * kLanes)
    tile<S, kTile>(q, L, nr, plain, n_plain, grouped, n_grouped, ms, ps, d0, acc, mem, stage);
  const int64_t rest = (q.Dp - d0) / kLanes;  // whole vectors left, fewer than kTile
  if (rest == 1) tile<S, 1>(q, L, nr, plain, n_plain, grouped, n_grouped, ms, ps, d0, acc, mem, stage);
  if (rest == 2) tile<S, 2>(q, L, nr, plain, n_plain, grouped, n_grouped, ms, ps, d0, acc, mem, stage);
  if (rest == 3) tile<S, 3>(q, L, nr, plain, n_plain, grouped, n_grouped, ms, ps, d0, acc, mem, stage);
  if (rest == 4) tile<S, 4>(q, L, nr, plain, n_plain, grouped, n_grouped, ms, ps, d0, acc, mem, stage);
  if (rest == 5) tile<S, 5>(q, L, nr, plain, n_plain, grouped, n_grouped, ms, ps, d0, acc, mem, stage);
  if (rest == 6) tile<S, 6>(q, L, nr, plain, n_plain, grouped, n_grouped, ms, ps, d0, acc, mem, stage);
  if (rest == 7) tile<S, 7>(q, L, nr, plain, n_plain, grouped, n_grouped, ms, ps, d0, acc, mem, stage);
}

// The blocks: kRows pixels of one image (planar input) or kRows consecutive rows (token rows). With a
// neuron, blocks are kRows positions of one image, and each thread takes the T blocks of the same
// positions in the order of t, carrying their membranes (kRows x Dp) from one step to the next.
template <typename S, typename I>
int spike_matmul(const Problem<S>& q, int n_threads) {
  if (q.Dp % 16 != 0 || q.Dp < q.D) return 2;
  bool planar = q.sk != 1;  // planar input: a channel's pixels contiguous
  for (int s = 0; s < q.n_segments; ++s) planar = planar && q.sp[s] == 1;
  const int64_t per_image = (q.P + kRows - 1) / kRows;
  const int64_t rows = q.M * q.P;
  const int64_t T = q.neuron ? q.neuron->T : 1;
  if (q.neuron && (T < 1 || q.M % T != 0)) return 5;
  const bool per_image_blocks = planar || q.neuron;
  const int64_t n_units = per_image_blocks ? q.M / T * per_image : (rows + kRows - 1) / kRows;
  spikemlp::parallel_blocks(n_units, T * kRows * q.K * q.D / 4, n_threads, [&q, planar, per_image, rows, T](
                                                                                 int64_t u0, int64_t u1) {
    BlockLists<S> L(q.K);
    alignas(64) S acc[kGroup * kTile * 64 / sizeof(S)];
    // The planar output's staging buffer (flush_staged): kRows rows of one column tile.
    std::vector<S> stage_store(q.planar_out && !q.neuron ? kRows * kTile * 64 / sizeof(S) : 0);
    S* stage = stage_store.empty() ? nullptr : stage_store.data();
    int64_t ms[kRows], ps[kRows];
    std::vector<S> mem_store(q.neuron ? kRows * q.Dp + 64 / sizeof(S) : 0);
    S* mem = q.neuron ? reinterpret_cast<S*>((reinterpret_cast<uintptr_t>(mem_store.data()) + 63) & ~uintptr_t(63))
                      : nullptr;
    const S v_init = q.neuron && q.neuron->hard ? q.v_reset : S(0);
    for (int64_t u = u0; u < u1; ++u) {
      if (!(planar || q.neuron)) {
        const int64_t r0 = u * kRows, nr = std::min(kRows, rows - r0);
        for (int64_t j = 0; j < nr; ++j) {
          ms[j] = (r0 + j) / q.P, ps[j] = (r0 + j) % q.P;
          list_row<S, I>(q, ms[j], ps[j], L, j);
        }
        block_product(q, nr, ms, ps, L, acc, mem, stage);
        continue;
      }
      const int64_t b = u / per_image, p0 = (u % per_image) * kRows, nr = std::min<int64_t>(kRows, q.P - p0);
      if (mem) std::fill(mem, mem + nr * q.Dp, v_init);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t m = t * (q.M / T) + b;
        for (int64_t j = 0; j < nr; ++j) ms[j] = m, ps[j] = p0 + j;
        if (planar) {
          for (int64_t j = 0; j < nr; j += kPix) list_pixels<S, I>(q, m, p0 + j, std::min<int64_t>(kPix, nr - j), L, j);
        } else {
          for (int64_t j = 0; j < nr; ++j) list_row<S, I>(q, m, p0 + j, L, j);
        }
        block_product(q, nr, ms, ps, L, acc, mem, stage);
      }
    }
  });
  return 0;
}

template <typename S>
int run(int input_u8, const void* const* base, const int64_t* channels, const int64_t* sm, const int64_t* sp, int n_segments,
        int64_t M, int64_t P, int64_t sk, const void* wt, const void* table, const void* bias, int64_t D, int64_t Dp,
        const void* col_scale,
        const void* col_shift, const void* row_scale, const void* row_shift, const void* addend, void* values,
        void* out, int planar_out, const Neuron* neuron, int n_threads) {
  if (n_segments < 1 || n_segments > kMaxSegments) return 3;
  Problem<S> q{};
  q.n_segments = n_segments;
  q.K = 0;
  for (int s = 0; s < n_segments; ++s) {
    q.base[s] = base[s];
    q.channels[s] = channels[s];
    q.sm[s] = sm[s];
    q.sp[s] = sp[s];
    q.K += channels[s];
  }
  q.M = M, q.P = P, q.sk = sk;
  q.wt = static_cast<const S*>(wt), q.table = static_cast<const S*>(table), q.bias = static_cast<const S*>(bias), q.D = D, q.Dp = Dp;
  q.col_scale = static_cast<const S*>(col_scale), q.col_shift = static_cast<const S*>(col_shift);
  q.row_scale = static_cast<const S*>(row_scale), q.row_shift = static_cast<const S*>(row_shift);
  if ((q.col_scale == nullptr) != (q.col_shift == nullptr) || (q.row_scale == nullptr) != (q.row_shift == nullptr))
    return 4;
  q.planar_out = planar_out != 0;
  q.neuron = neuron;
  q.addend = static_cast<const S*>(addend);
  q.values = static_cast<S*>(values);
  if (q.values && !neuron) return 7;
  if (neuron) {
    if (neuron->mode < 0 || neuron->mode > 2) return 6;
    q.spikes = static_cast<uint8_t*>(out);
    // As csrc/lif_cpu.cpp: the constants rounded to S (as PyTorch narrows them), 1 / tau when exact.
    q.tau = static_cast<S>(neuron->tau), q.v_th = static_cast<S>(neuron->v_th);
    q.v_reset = static_cast<S>(neuron->v_reset);
    q.mul_inv = spikemlp::exact_reciprocal(q.tau);
    q.inv_tau = S(1) / q.tau;
  } else {
    q.out = static_cast<S*>(out);
  }
  return input_u8 ? spike_matmul<S, uint8_t>(q, n_threads) : spike_matmul<S, S>(q, n_threads);
}

}  // namespace

// The C interface (see the top of this file). dtype 0 float32, 1 float64 (weights, sums, outputs); input_u8:
// the inputs are 0/1 bytes (uint8) instead of dtype. base, channels, sm and sp (image and position strides):
// n_segments (1-3) entries. table: the grouped sums or null. bias, col_scale, col_shift: Dp entries or null;
// row_scale, row_shift: P entries or null (scale and shift given together). neuron_T > 0: the outputs
// charge a neuron over neuron_T steps (M = neuron_T x images) and `out` receives its spikes as bytes.
// addend: null or a contiguous tensor in the output layout, added after the epilogue; values (with a
// neuron only): null or where the neuron's inputs are stored, in the output layout.
// Returns 0, or 1 (bad dtype), 2 (Dp not a multiple of 16 or < D), 3 (bad segment count), 4 (a scale
// without its shift), 5 (M not a multiple of neuron_T), 6 (bad charge mode), 7 (values without a neuron).
extern "C" int spikemlp_spike_matmul(int dtype, int input_u8, const void* const* base, const int64_t* channels,
                                     const int64_t* sm, const int64_t* sp, int n_segments, int64_t M, int64_t P,
                                     int64_t sk, const void* wt, const void* table, const void* bias, int64_t D,
                                     int64_t Dp, const void* col_scale, const void* col_shift, const void* row_scale,
                                     const void* row_shift, const void* addend, void* values, void* out,
                                     int planar_out, int64_t neuron_T,
                                     int neuron_mode, int neuron_hard, double tau, double v_th, double v_reset,
                                     int n_threads) {
  const Neuron neuron{neuron_T, neuron_mode, neuron_hard != 0, tau, v_th, v_reset};
  const Neuron* n = neuron_T > 0 ? &neuron : nullptr;
  switch (dtype) {
    case 0:
      return run<float>(input_u8, base, channels, sm, sp, n_segments, M, P, sk, wt, table, bias, D, Dp, col_scale,
                        col_shift, row_scale, row_shift, addend, values, out, planar_out, n, n_threads);
    case 1:
      return run<double>(input_u8, base, channels, sm, sp, n_segments, M, P, sk, wt, table, bias, D, Dp, col_scale,
                         col_shift, row_scale, row_shift, addend, values, out, planar_out, n, n_threads);
    default:
      return 1;
  }
}
