// The op longyarn::weight_row_product: one activation row times a weight matrix kept at half
// precision or int8, on a CPU:
//     y[o] = scale[o] * sum_i x[i] * W[o, i]
// x and y fp32; W (out, in) row-major, fp16, bf16 or int8, widened to fp32 in registers;
// in a multiple of 16. Built and loaded by row_kernel.py (AVX-512 or AVX2 as the CPU has
// them; torch's threads through at::parallel_for, with g++ on torch's own OpenMP runtime).
//
// Decoding one token reads every weight once, so this runs at the speed of memory. Two things
// make it faster than a plain reduction: four rows are summed at once (four streams, and four
// independent sums), and each stream is prefetched 16 KB ahead, past what the hardware
// prefetcher reaches from one 4 KB page. Measured on a 2-core Xeon over the 0.1B shape's
// matrices: fp16 from 14 to 27 GB/s (benchmarks/cpu_peers.py prints the model's figures).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <cstdint>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t GROUP = 4;
constexpr int64_t PREFETCH_BYTES = 16384;

template <int K>
using Kind = std::integral_constant<int, K>;  // 0: fp16, 1: bf16, 2: int8

#if defined(__AVX512F__)
constexpr int64_t LANES = 16;
using Vec = __m512;
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline Vec multiply_add(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
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
#else
constexpr int64_t LANES = 8;
using Vec = __m256;
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline Vec multiply_add(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
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
#endif

// Prefetching reads nothing and never faults, past the matrix included; the address is
// computed as an integer so that no pointer leaves its array.
inline void prefetch(const void* p, int64_t bytes_ahead) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + bytes_ahead), _MM_HINT_T0);
}

template <int K, typename T>
void product(const float* x, const T* w, const float* scale, float* y, int64_t out, int64_t in) {
  constexpr Kind<K> kind;
  constexpr int64_t per_line = 64 / sizeof(T);
  const int64_t groups = (out + GROUP - 1) / GROUP;
  // torch's own threads, as many as torch is set to use on this thread.
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const int64_t first = g * GROUP;
      const T* rows = w + first * in;
      if (first + GROUP <= out) {
        Vec total[GROUP];
        for (int j = 0; j < GROUP; ++j) total[j] = zero();
        for (int64_t i = 0; i < in; i += LANES) {
          if (i % per_line == 0) {
            for (int j = 0; j < GROUP; ++j) prefetch(rows + j * in + i, PREFETCH_BYTES);
          }
          const Vec xs = load(x + i);
          for (int j = 0; j < GROUP; ++j) total[j] = multiply_add(xs, widen(rows + j * in + i, kind), total[j]);
        }
        for (int j = 0; j < GROUP; ++j) y[first + j] = sum(total[j]) * scale[first + j];
      } else {  // the last rows, fewer than a group
        for (int64_t o = first; o < out; ++o) {
          Vec total = zero();
          for (int64_t i = 0; i < in; i += LANES) total = multiply_add(load(x + i), widen(w + o * in + i, kind), total);
          y[o] = sum(total) * scale[o];
        }
      }
    }
  });
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
  const float* xs = row.data_ptr<float>();
  const float* s = scale.data_ptr<float>();
  float* ys = y.data_ptr<float>();
  switch (values.scalar_type()) {
    case at::kHalf: product<0>(xs, static_cast<const uint16_t*>(values.data_ptr()), s, ys, out, in); break;
    case at::kBFloat16: product<1>(xs, static_cast<const uint16_t*>(values.data_ptr()), s, ys, out, in); break;
    case at::kChar: product<2>(xs, static_cast<const int8_t*>(values.data_ptr()), s, ys, out, in); break;
    default: TORCH_CHECK(false, "weight_row_product takes fp16, bf16 or int8 weights");
  }
  return y;
}

// The output's shape and dtype without computing it, for torch.compile's tracing.
at::Tensor weight_row_product_shape(const at::Tensor& x, const at::Tensor& values, const at::Tensor& scale) {
  return at::empty(product_sizes(x, values), x.options());
}

TORCH_LIBRARY_FRAGMENT(longyarn, m) {
  m.def("weight_row_product(Tensor x, Tensor values, Tensor scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(longyarn, CPU, m) { m.impl("weight_row_product", &weight_row_product); }
TORCH_LIBRARY_IMPL(longyarn, Meta, m) { m.impl("weight_row_product", &weight_row_product_shape); }
