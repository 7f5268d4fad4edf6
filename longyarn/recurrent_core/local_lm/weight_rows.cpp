// The op longyarn::weight_row_product: one activation row times a weight matrix kept at half
// precision or int8, on a CPU:
//     y[o] = scale[o] * sum_i x[i] * W[o, i]
// x and y fp32; W (out, in) row-major, fp16, bf16 or int8, widened to fp32 in registers;
// in a multiple of 16. Built and loaded by row_kernel.py (AVX-512 or AVX2 as the CPU has
// them; torch's threads through at::parallel_for, with g++ on torch's own OpenMP runtime).
//
// Decoding one token reads every weight once, so this runs at the speed of memory. Two things
// make it faster than a plain reduction: each row is summed in four independent parts (a
// single sum is a chain of dependent additions, slower than the memory), and the row is
// prefetched 4 KB ahead. Measured on a 2-core AVX2 EPYC over a 0.1B model's matrices in huge
// pages: 1.07x to 1.2x (medians of 12 alternating rounds) the speed of summing four rows at
// once with one sum each, prefetched 16 KB ahead, which itself read 14 to 27 GB/s where a
// plain reduction read 14 (benchmarks/cpu_peers.py prints the model's figures).
//
// Below it, longyarn::token_blocks: a whole decode step of one sequence on this kernel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#if __has_include(<sleef.h>)
#include <sleef.h>
#define SLEEF_LANES 1
#else
#define SLEEF_LANES 0
#endif
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t GROUP = 4;  // the rows a thread's share of a matrix is counted in
constexpr int CHAINS = 4;  // independent sums per row
constexpr int64_t PREFETCH_BYTES = 4096;

template <int K>
using Kind = std::integral_constant<int, K>;  // 0: fp16, 1: bf16, 2: int8, 3: fp32

#if defined(__AVX512F__)
constexpr int64_t LANES = 16;
using Vec = __m512;
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline Vec broadcast(float v) { return _mm512_set1_ps(v); }
inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec multiply(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec multiply_add(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }
inline Vec widen(const uint16_t* p, Kind<0>) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline Vec widen(const uint16_t* p, Kind<1>) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
inline Vec widen(const int8_t* p, Kind<2>) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline Vec widen(const float* p, Kind<3>) { return load(p); }
inline Vec divide(Vec a, Vec b) { return _mm512_div_ps(a, b); }
#if SLEEF_LANES
inline Vec exp_lanes(Vec v) { return Sleef_expf16_u10avx512f(v); }
inline Vec tanh_lanes(Vec v) { return Sleef_tanhf16_u10avx512f(v); }
#endif
#else
constexpr int64_t LANES = 8;
using Vec = __m256;
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline Vec broadcast(float v) { return _mm256_set1_ps(v); }
inline void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec multiply(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec multiply_add(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline float sum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline Vec widen(const uint16_t* p, Kind<0>) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline Vec widen(const uint16_t* p, Kind<1>) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
inline Vec widen(const int8_t* p, Kind<2>) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline Vec widen(const float* p, Kind<3>) { return load(p); }
inline Vec divide(Vec a, Vec b) { return _mm256_div_ps(a, b); }
#if SLEEF_LANES
inline Vec exp_lanes(Vec v) { return Sleef_expf8_u10avx2(v); }
inline Vec tanh_lanes(Vec v) { return Sleef_tanhf8_u10avx2(v); }
#endif
#endif

// exp and tanh a vector at a time: SLEEF's (1 ulp), which libtorch_cpu carries and exports; a
// token of a 0.1B model takes some 40,000 of them. Without its header, one lane at a time.
#if !SLEEF_LANES
inline Vec lane_by_lane(Vec v, float (*f)(float)) {
  alignas(64) float lanes[LANES];
  store(lanes, v);
  for (float& lane : lanes) lane = f(lane);
  return load(lanes);
}
inline Vec exp_lanes(Vec v) { return lane_by_lane(v, [](float z) { return std::exp(z); }); }
inline Vec tanh_lanes(Vec v) { return lane_by_lane(v, [](float z) { return std::tanh(z); }); }
#endif
inline Vec sigmoid_lanes(Vec v) {
  return divide(broadcast(1.0f), multiply_add(broadcast(1.0f), exp_lanes(multiply(broadcast(-1.0f), v)), broadcast(1.0f)));
}

// Prefetching reads nothing and never faults, past the matrix included; the address is
// computed as an integer so that no pointer leaves its array.
inline void prefetch(const void* p, int64_t bytes_ahead) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + bytes_ahead), _MM_HINT_T0);
}

// Row groups [begin, end) of y = x W^T, each row scaled unless `scale` is null.
template <int K, typename T>
void product_groups(const float* x, const T* w, const float* scale, float* y, int64_t out, int64_t in,
                    int64_t begin, int64_t end) {
  constexpr Kind<K> kind;
  constexpr int64_t per_line = 64 / sizeof(T);
  constexpr int64_t step = LANES * CHAINS;
  const int64_t whole = in - in % step;
  for (int64_t o = begin * GROUP, last = std::min(end * GROUP, out); o < last; ++o) {
    const T* row = w + o * in;
    Vec total[CHAINS];
    for (int c = 0; c < CHAINS; ++c) total[c] = zero();
    int64_t i = 0;
    for (; i < whole; i += step) {
      if constexpr (step >= per_line) {
        for (int64_t line = 0; line < step; line += per_line) prefetch(row + i + line, PREFETCH_BYTES);
      } else if (i % per_line == 0) {
        prefetch(row + i, PREFETCH_BYTES);
      }
      for (int c = 0; c < CHAINS; ++c)
        total[c] = multiply_add(load(x + i + c * LANES), widen(row + i + c * LANES, kind), total[c]);
    }
    for (; i < in; i += LANES) total[0] = multiply_add(load(x + i), widen(row + i, kind), total[0]);
    for (int c = 1; c < CHAINS; ++c) total[0] = add(total[0], total[c]);
    y[o] = scale ? sum(total[0]) * scale[o] : sum(total[0]);
  }
}

// One product y = x W^T for values already checked to be fp16, bf16, int8 or fp32; each row
// scaled unless `scale` is null.
struct Product {
  const float* x;
  const at::Tensor& values;
  const float* scale;
  float* y;

  int64_t groups() const { return (values.size(0) + GROUP - 1) / GROUP; }

  void run(int64_t begin, int64_t end) const {
    const int64_t out = values.size(0), in = values.size(1);
    const void* w = values.data_ptr();
    switch (values.scalar_type()) {
      case at::kHalf: product_groups<0>(x, static_cast<const uint16_t*>(w), scale, y, out, in, begin, end); break;
      case at::kBFloat16: product_groups<1>(x, static_cast<const uint16_t*>(w), scale, y, out, in, begin, end); break;
      case at::kChar: product_groups<2>(x, static_cast<const int8_t*>(w), scale, y, out, in, begin, end); break;
      default: product_groups<3>(x, static_cast<const float*>(w), scale, y, out, in, begin, end); break;
    }
  }
};

// Independent products in one parallel region on torch's threads (as many as torch is set to
// use on this thread), each thread streaming its share of every matrix: waking the threads
// costs a few microseconds, and a small matrix (a LoRA) streams in less.
void products(const std::vector<Product>& list) {
  const int64_t parts = at::get_num_threads();
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part)
      for (const Product& p : list) {
        const int64_t groups = p.groups();
        p.run(groups * part / parts, groups * (part + 1) / parts);
      }
  });
}

void project(const float* x, const at::Tensor& values, const at::Tensor& scale, float* y) {
  products({{x, values, scale.data_ptr<float>(), y}});
}

}  // namespace

std::vector<int64_t> product_sizes(const at::Tensor& x, const at::Tensor& values) {
  TORCH_CHECK(values.dim() == 2, "weight_row_product takes an (out, in) matrix");
  auto sizes = x.sizes().vec();
  TORCH_CHECK(!sizes.empty(), "weight_row_product takes a row, not a number");
  sizes.back() = values.size(0);
  return sizes;
}

at::Tensor weight_row_product(const at::Tensor& x, const at::Tensor& values, const at::Tensor& scale) {
  auto sizes = product_sizes(x, values);
  const int64_t out = values.size(0), in = values.size(1);
  TORCH_CHECK(values.is_contiguous() && in > 0 && in % 16 == 0 && in % LANES == 0,
              "weight_row_product takes a contiguous matrix whose width is a multiple of 16");
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.size(-1) == in && x.numel() == in,
              "weight_row_product takes one fp32 row as wide as the matrix");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.is_contiguous() && scale.numel() == out,
              "weight_row_product takes one fp32 scale per output row");
  const at::Tensor row = x.contiguous();
  at::Tensor y = at::empty(sizes, x.options());
  TORCH_CHECK(values.scalar_type() == at::kHalf || values.scalar_type() == at::kBFloat16 ||
                  values.scalar_type() == at::kChar,
              "weight_row_product takes fp16, bf16 or int8 weights");
  project(row.data_ptr<float>(), values, scale, y.data_ptr<float>());
  return y;
}

// The output's shape and dtype without computing it, for torch.compile's tracing.
at::Tensor weight_row_product_shape(const at::Tensor& x, const at::Tensor& values, const at::Tensor& scale) {
  return at::empty(product_sizes(x, values), x.options());
}

// ---------------------------------------------------------------------------------------------
// The op longyarn::token_blocks: one token of one sequence through every RWKV-7 block, as
// token_block (block.py) computes it, in one call. Compiled PyTorch spends about as long around
// the weight products of a token (small fused loops, each waking the threads, and the graph
// calls) as a CPU's memory takes to stream a half-precision model's weights; here the small
// work is plain loops on one thread, and torch's threads wake six times a block: for the
// receptance, key, value and every LoRA's first product at once, for the LoRAs' second
// products, for the wkv heads, and for each of the other three matrices. The LoRAs, held as
// rows (weights.py), stream through the matrices' kernel.
namespace {

constexpr float LAYER_NORM_EPS = 1e-5f;
constexpr float GROUP_NORM_EPS = 64e-5f;
constexpr float DECAY_SCALE = 0.6065306597126334f;  // exp(-0.5)

// Each block's tensors in the list the op takes, in this order (native_step.py builds it).
enum Weight : int64_t {
  LN1_WEIGHT, LN1_BIAS, TOKEN_SHIFT_MIX, RECEPTANCE, RECEPTANCE_SCALE, KEY, KEY_SCALE, VALUE, VALUE_SCALE,
  W0, W1, W2, A0, A1, A2, V0, V1, V2, G1, G2, K_K, K_A, R_K, OUTPUT, OUTPUT_SCALE, LN_X_WEIGHT, LN_X_BIAS,
  LN2_WEIGHT, LN2_BIAS, CHANNEL_MIX_X_K, FFN_KEY, FFN_KEY_SCALE, FFN_VALUE, FFN_VALUE_SCALE, WEIGHTS_PER_BLOCK
};

const float* floats(const at::Tensor& t) { return t.data_ptr<float>(); }

void layer_norm(const float* x, const float* weight, const float* bias, float* y, int64_t n, float eps) {
  double mean = 0.0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= n;
  double variance = 0.0;
  for (int64_t i = 0; i < n; ++i) variance += (x[i] - mean) * (x[i] - mean);
  const float inverse = static_cast<float>(1.0 / std::sqrt(variance / n + eps));
  const float centre = static_cast<float>(mean);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - centre) * inverse * weight[i] + bias[i];
}

// x[i] = f(x[i]) over n floats, n a multiple of 16.
template <typename F>
void each_lane(float* x, int64_t n, F f) {
  for (int64_t i = 0; i < n; i += LANES) store(x + i, f(load(x + i)));
}

// One token's wkv step for one head, on its state S [value channel i, key channel j] (N x N,
// N a multiple of 16):
//   S' = S diag(w) + (S a) b^T + v k^T, out = S' r.
// Four rows at a time: each row's two dot products are chains of dependent additions, and four
// independent chains keep the core's multipliers busy.
void wkv_head_step(float* S, const float* r, const float* w, const float* k, const float* v, const float* a,
                   const float* b, float* out, int64_t N) {
  constexpr int ROWS = 4;
  for (int64_t i = 0; i < N; i += ROWS) {
    float* rows = S + i * N;
    Vec along[ROWS], o[ROWS];
    for (int q = 0; q < ROWS; ++q) along[q] = o[q] = zero();
    for (int64_t j = 0; j < N; j += LANES) {
      const Vec aj = load(a + j);
      for (int q = 0; q < ROWS; ++q) along[q] = multiply_add(load(rows + q * N + j), aj, along[q]);
    }
    Vec along_a[ROWS], vi[ROWS];
    for (int q = 0; q < ROWS; ++q) {
      along_a[q] = broadcast(sum(along[q]));
      vi[q] = broadcast(v[i + q]);
    }
    for (int64_t j = 0; j < N; j += LANES) {
      const Vec wj = load(w + j), bj = load(b + j), kj = load(k + j), rj = load(r + j);
      for (int q = 0; q < ROWS; ++q) {
        float* at = rows + q * N + j;
        const Vec updated = multiply_add(vi[q], kj, multiply_add(along_a[q], bj, multiply(load(at), wj)));
        store(at, updated);
        o[q] = multiply_add(updated, rj, o[q]);
      }
    }
    for (int q = 0; q < ROWS; ++q) out[i + q] = sum(o[q]);
  }
}

void add(float* y, const float* bias, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += bias[i];
}

void block(const at::Tensor* wt, float* x, float* v_first, bool first, float* time_mix_shift,
           float* channel_mix_shift, float* state, int64_t C, int64_t N, int64_t widest, float* scratch) {
  const int64_t H = C / N;
  float* normed = scratch;
  float* mixed = normed + C;  // 6 rows: r, k, v, w, a, g
  float* r = mixed + 6 * C;
  float* k = r + C;
  float* v = k + C;
  float* decay = v + C;
  float* iclr = decay + C;
  float* gate = iclr + C;
  float* kk = gate + C;
  float* out = kk + C;
  float* value_gate = out + C;
  float* lora_w = value_gate + C;  // the LoRAs' narrow rows, none wider than C
  float* lora_a = lora_w + C;
  float* lora_g = lora_a + C;
  float* lora_v = lora_g + C;
  float* hidden = lora_v + C;  // the feed-forward's wide row

  layer_norm(x, floats(wt[LN1_WEIGHT]), floats(wt[LN1_BIAS]), normed, C, LAYER_NORM_EPS);
  const float* mix = floats(wt[TOKEN_SHIFT_MIX]);
  for (int m = 0; m < 6; ++m)
    for (int64_t c = 0; c < C; ++c) mixed[m * C + c] = normed[c] + (time_mix_shift[c] - normed[c]) * mix[m * C + c];
  std::memcpy(time_mix_shift, normed, C * sizeof(float));

  // Everything the mixed rows feed: the receptance, key and value, and each LoRA's first product.
  std::vector<Product> first_products = {
      {mixed, wt[RECEPTANCE], floats(wt[RECEPTANCE_SCALE]), r},
      {mixed + C, wt[KEY], floats(wt[KEY_SCALE]), k},
      {mixed + 2 * C, wt[VALUE], floats(wt[VALUE_SCALE]), v},
      {mixed + 3 * C, wt[W1], nullptr, lora_w},
      {mixed + 4 * C, wt[A1], nullptr, lora_a},
      {mixed + 5 * C, wt[G1], nullptr, lora_g}};
  if (!first) first_products.push_back({mixed + 2 * C, wt[V1], nullptr, lora_v});
  products(first_products);

  each_lane(lora_w, wt[W1].size(0), tanh_lanes);
  each_lane(lora_g, wt[G1].size(0), sigmoid_lanes);
  std::vector<Product> second_products = {
      {lora_w, wt[W2], nullptr, decay}, {lora_a, wt[A2], nullptr, iclr}, {lora_g, wt[G2], nullptr, gate}};
  if (!first) second_products.push_back({lora_v, wt[V2], nullptr, value_gate});
  products(second_products);
  add(decay, floats(wt[W0]), C);
  add(iclr, floats(wt[A0]), C);
  each_lane(iclr, C, sigmoid_lanes);

  const float* k_k = floats(wt[K_K]);
  const float* k_a = floats(wt[K_A]);
  for (int64_t h = 0; h < H; ++h) {
    float norm = 0.0f;
    for (int64_t j = h * N; j < (h + 1) * N; ++j) {
      kk[j] = k[j] * k_k[j];
      norm += kk[j] * kk[j];
    }
    const float inverse = 1.0f / std::max(std::sqrt(norm), 1e-12f);
    for (int64_t j = h * N; j < (h + 1) * N; ++j) kk[j] *= inverse;
  }
  for (int64_t c = 0; c < C; ++c) k[c] *= (1.0f - k_a[c]) + iclr[c] * k_a[c];
  if (first) {
    std::memcpy(v_first, v, C * sizeof(float));
  } else {
    add(value_gate, floats(wt[V0]), C);
    each_lane(value_gate, C, sigmoid_lanes);
    for (int64_t c = 0; c < C; ++c) v[c] += (v_first[c] - v[c]) * value_gate[c];
  }
  each_lane(decay, C, [](Vec z) { return exp_lanes(multiply(broadcast(-DECAY_SCALE), sigmoid_lanes(z))); });

  // The wkv step per head, with a = kk and b = -kk * iclr.
  const float* r_k = floats(wt[R_K]);
  const float* ln_x_weight = floats(wt[LN_X_WEIGHT]);
  const float* ln_x_bias = floats(wt[LN_X_BIAS]);
  at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> removal(N);
    for (int64_t h = begin; h < end; ++h) {
      const int64_t base = h * N;
      float* S = state + h * N * N;
      for (int64_t j = 0; j < N; ++j) removal[j] = -kk[base + j] * iclr[base + j];
      // N is a multiple of LANES (head sizes are multiples of 16, as token_blocks checks).
      wkv_head_step(S, r + base, decay + base, k + base, v + base, kk + base, removal.data(), out + base, N);
      float mean = 0.0f;
      for (int64_t i = 0; i < N; ++i) mean += out[base + i];
      mean /= N;
      float variance = 0.0f;
      for (int64_t i = 0; i < N; ++i) variance += (out[base + i] - mean) * (out[base + i] - mean);
      const float inverse = 1.0f / std::sqrt(variance / N + GROUP_NORM_EPS);
      float bonus = 0.0f;
      for (int64_t j = 0; j < N; ++j) bonus += r[base + j] * k[base + j] * r_k[base + j];
      for (int64_t i = 0; i < N; ++i) {
        const int64_t c = base + i;
        out[c] = ((out[c] - mean) * inverse * ln_x_weight[c] + ln_x_bias[c] + bonus * v[c]) * gate[c];
      }
    }
  });
  project(out, wt[OUTPUT], wt[OUTPUT_SCALE], hidden);
  for (int64_t c = 0; c < C; ++c) x[c] += hidden[c];

  layer_norm(x, floats(wt[LN2_WEIGHT]), floats(wt[LN2_BIAS]), normed, C, LAYER_NORM_EPS);
  const float* x_k = floats(wt[CHANNEL_MIX_X_K]);
  for (int64_t c = 0; c < C; ++c) mixed[c] = normed[c] + (channel_mix_shift[c] - normed[c]) * x_k[c];
  std::memcpy(channel_mix_shift, normed, C * sizeof(float));
  project(mixed, wt[FFN_KEY], wt[FFN_KEY_SCALE], hidden);
  for (int64_t j = 0, n = wt[FFN_KEY].size(0); j < n; ++j) hidden[j] = hidden[j] > 0.0f ? hidden[j] * hidden[j] : 0.0f;
  project(hidden, wt[FFN_VALUE], wt[FFN_VALUE_SCALE], out);
  for (int64_t c = 0; c < C; ++c) x[c] += out[c];
}

}  // namespace

// x: the token's embedding row (C,), fp32. The state tensors are one sequence's, (L, 1, C) and
// (L, 1, H, N, N), fp32 and contiguous, updated in place. Returns the last hidden state (C,).
at::Tensor token_blocks(const at::Tensor& x, at::Tensor& time_mix_shift, at::Tensor& channel_mix_shift,
                        at::Tensor& wkv, at::TensorList weights) {
  const int64_t C = x.numel();
  const int64_t L = wkv.size(0), N = wkv.size(-1);
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == L * WEIGHTS_PER_BLOCK,
              "token_blocks takes ", WEIGHTS_PER_BLOCK, " tensors per block");
  TORCH_CHECK(time_mix_shift.is_contiguous() && channel_mix_shift.is_contiguous() && wkv.is_contiguous() &&
                  time_mix_shift.numel() == L * C && channel_mix_shift.numel() == L * C && wkv.numel() == L * C * N,
              "token_blocks takes one sequence's contiguous fp32 state");
  TORCH_CHECK(N % 16 == 0 && C % N == 0, "token_blocks takes heads whose size is a multiple of 16");
  at::Tensor hidden = x.to(at::kFloat).contiguous().clone().view({C});
  float* h = hidden.data_ptr<float>();
  int64_t widest = C;
  for (int64_t l = 0; l < L; ++l) widest = std::max(widest, weights[l * WEIGHTS_PER_BLOCK + FFN_KEY].size(0));
  for (int64_t l = 0; l < L; ++l)
    for (Weight lora : {W1, A1, G1, V1})
      TORCH_CHECK(weights[l * WEIGHTS_PER_BLOCK + lora].numel() == 0 ||
                      (weights[l * WEIGHTS_PER_BLOCK + lora].size(0) <= C && weights[l * WEIGHTS_PER_BLOCK + lora].size(0) % 16 == 0),
                  "token_blocks takes LoRAs no wider than the model, a multiple of 16 wide");
  std::vector<float> scratch(20 * C + widest), v_first(C);
  for (int64_t l = 0; l < L; ++l) {
    block(weights.data() + l * WEIGHTS_PER_BLOCK, h, v_first.data(), l == 0,
          time_mix_shift.data_ptr<float>() + l * C, channel_mix_shift.data_ptr<float>() + l * C,
          wkv.data_ptr<float>() + l * C * N, C, N, widest, scratch.data());
  }
  return hidden;
}

// The op longyarn::wkv_sequence: the wkv recurrence over a prefill's tokens, as `wkv7`
// (longyarn/kernels/wkv7) computes it, token by token in fp32, without autograd. r, w (the
// decay, exp(log_w)), k, v, a, b: (B, T, H, N) fp32 contiguous, N a multiple of 16; state and
// new_state (B, H, N, N), new_state written (it may be state itself). Returns out (B, T, H, N).
// Each head's state (16 KB at N = 64) stays in the core's L1 cache across the tokens, so a
// step costs about its arithmetic: on a 2-core EPYC 0.1B's 2,048-token prefill spends 0.1 s
// here against 0.9 s in the chunked PyTorch form.
at::Tensor wkv_sequence(const at::Tensor& r, const at::Tensor& w, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& a, const at::Tensor& b, const at::Tensor& state, at::Tensor& new_state) {
  TORCH_CHECK(r.dim() == 4, "wkv_sequence takes (batch, time, heads, head size) inputs");
  const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  for (const at::Tensor* t : {&r, &w, &k, &v, &a, &b})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->sizes() == r.sizes(),
                "wkv_sequence takes contiguous fp32 inputs of one shape");
  TORCH_CHECK(N % 16 == 0, "wkv_sequence takes heads whose size is a multiple of 16");
  const std::vector<int64_t> state_shape = {B, H, N, N};
  for (const at::Tensor* t : {&state, const_cast<const at::Tensor*>(&new_state)})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->sizes() == state_shape,
                "wkv_sequence takes a contiguous fp32 (batch, heads, head size, head size) state");
  if (!new_state.is_same(state)) new_state.copy_(state);
  at::Tensor out = at::empty_like(r);
  const float *rp = floats(r), *wp = floats(w), *kp = floats(k), *vp = floats(v), *ap = floats(a), *bp = floats(b);
  float* op = out.data_ptr<float>();
  float* sp = new_state.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t batch = bh / H, h = bh % H;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t at_t = ((batch * T + t) * H + h) * N;
        wkv_head_step(sp + bh * N * N, rp + at_t, wp + at_t, kp + at_t, vp + at_t, ap + at_t, bp + at_t, op + at_t, N);
      }
    }
  });
  return out;
}

TORCH_LIBRARY_FRAGMENT(longyarn, m) {
  m.def("weight_row_product(Tensor x, Tensor values, Tensor scale) -> Tensor");
  m.def("wkv_sequence(Tensor r, Tensor w, Tensor k, Tensor v, Tensor a, Tensor b, Tensor state, Tensor(a!) new_state) -> Tensor");
  m.def("token_blocks(Tensor x, Tensor(a!) time_mix_shift, Tensor(b!) channel_mix_shift, Tensor(c!) wkv, Tensor[] weights) -> Tensor");
}

TORCH_LIBRARY_IMPL(longyarn, CPU, m) {
  m.impl("weight_row_product", &weight_row_product);
  m.impl("token_blocks", &token_blocks);
  m.impl("wkv_sequence", &wkv_sequence);
}
TORCH_LIBRARY_IMPL(longyarn, Meta, m) { m.impl("weight_row_product", &weight_row_product_shape); }
