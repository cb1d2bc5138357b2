// Fused CPU kernel for multi-scale deformable attention, forward and backward.
//
// Semantics are exactly F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)
// on each level at grid 2 * loc - 1, weighted by attention_weights and summed over levels and
// points: the pixel coordinate of a normalized location is x = loc_x * W_l - 0.5, the four
// neighbouring pixels are read, and neighbours outside the map read zero.
//
// Layouts (all contiguous):
//   value               (B, S, M, D)
//   spatial_shapes      (L, 2) int64, (H_l, W_l)
//   level_start_index   (L,) int64
//   sampling_locations  (B, Lq, M, L, P, 2), (x, y)
//   attention_weights   (B, Lq, M, L, P)
//   output              (B, Lq, M, D)
//
// Arithmetic runs in at::opmath_type<scalar_t>: float for float/half/bfloat16, double for double.
// Threads come from at::parallel_for, so torch.set_num_threads applies.
//   forward:  parallel over (batch, query) blocks, taken dynamically; each owns its output rows.
//   backward: parallel over (query chunk, batch, head). A (batch, head) pair owns a disjoint
//             slice of grad_value, so tasks never write the same element; query chunks only
//             exist when there are more threads than (batch, head) pairs, and then each chunk
//             accumulates into its own copy of grad_value, summed at the end. No atomics and no
//             (B, Lq, M, L, P, D) intermediate.

#include <torch/extension.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

struct Sizes {
  int64_t B, S, M, D, Lq, L, P;
};

// The four neighbours of a sampling point: flat pixel index inside the level (or -1 when the
// neighbour is outside the map), bilinear weight, and d(weight)/dx, d(weight)/dy in pixel units.
template <typename acc_t>
struct Corners {
  int64_t index[4];
  acc_t weight[4];
  acc_t dweight_dx[4];
  acc_t dweight_dy[4];
};

// Returns false when no neighbour can contribute (far outside, or a non-finite coordinate).
template <typename acc_t>
inline bool bilinear_corners(acc_t x, acc_t y, int64_t height, int64_t width, Corners<acc_t>& c) {
  // x in (-1, W) and y in (-1, H) is where some neighbour has non-zero weight; at exactly -1
  // the weight is zero but the gradient is not, so keep a margin. NaN fails every comparison.
  if (!(x > -2 && y > -2 && x < width + 1 && y < height + 1)) return false;
  const acc_t x_floor = std::floor(x);
  const acc_t y_floor = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(x_floor);
  const int64_t y0 = static_cast<int64_t>(y_floor);
  const acc_t lx = x - x_floor, ly = y - y_floor;  // distances to the top-left neighbour
  const acc_t hx = 1 - lx, hy = 1 - ly;
  const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
  const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
  c.weight[0] = hy * hx; c.dweight_dx[0] = -hy; c.dweight_dy[0] = -hx;
  c.weight[1] = hy * lx; c.dweight_dx[1] = hy;  c.dweight_dy[1] = -lx;
  c.weight[2] = ly * hx; c.dweight_dx[2] = -ly; c.dweight_dy[2] = hx;
  c.weight[3] = ly * lx; c.dweight_dx[3] = ly;  c.dweight_dy[3] = lx;
  for (int k = 0; k < 4; ++k) {
    const bool inside = xs[k] >= 0 && xs[k] < width && ys[k] >= 0 && ys[k] < height;
    c.index[k] = inside ? ys[k] * width + xs[k] : -1;
  }
  return true;
}

// True where the AVX-512 paths apply: float32 arithmetic on 16 channels at a time.
template <typename scalar_t, int kD>
constexpr bool kAvx512Channels =
#if defined(__AVX512F__)
    (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, c10::BFloat16> ||
     std::is_same_v<scalar_t, c10::Half>) && kD > 0 && kD % 16 == 0;
#else
    false;
#endif

#if defined(__AVX512F__)
// 16 channels as float32.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::BFloat16* p) {  // bfloat16 = the top half of a float32
  const __m512i widened = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(widened, 16));
}
inline __m512 load16(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#endif

// The backward's fast path for one sample: the four dot products <g, v_k> over the D channels
// and the four updates grad_value_k += w_k * g. Portable loop, and an AVX-512 version for float,
// bfloat16 and float16 values with D a multiple of 16 (otherwise the compiler reduces the four
// dots lane by lane, which costs more than the rest).
template <typename scalar_t, typename acc_t, int kD>
inline void corner_dots_and_updates(int64_t D, const acc_t* __restrict__ g, const scalar_t* __restrict__ v00,
                                    const scalar_t* __restrict__ v01, const scalar_t* __restrict__ v10,
                                    const scalar_t* __restrict__ v11, acc_t* __restrict__ gv00,
                                    acc_t* __restrict__ gv01, acc_t* __restrict__ gv10, acc_t* __restrict__ gv11,
                                    acc_t w00, acc_t w01, acc_t w10, acc_t w11, acc_t dots[4]) {
#if defined(__AVX512F__)
  if constexpr (kAvx512Channels<scalar_t, kD>) {
    __m512 s00 = _mm512_setzero_ps(), s01 = _mm512_setzero_ps(), s10 = _mm512_setzero_ps(), s11 = _mm512_setzero_ps();
    const __m512 a00 = _mm512_set1_ps(w00), a01 = _mm512_set1_ps(w01), a10 = _mm512_set1_ps(w10),
                 a11 = _mm512_set1_ps(w11);
    for (int d = 0; d < kD; d += 16) {
      const __m512 gd = _mm512_loadu_ps(g + d);
      s00 = _mm512_fmadd_ps(gd, load16(v00 + d), s00);
      s01 = _mm512_fmadd_ps(gd, load16(v01 + d), s01);
      s10 = _mm512_fmadd_ps(gd, load16(v10 + d), s10);
      s11 = _mm512_fmadd_ps(gd, load16(v11 + d), s11);
      _mm512_storeu_ps(gv00 + d, _mm512_fmadd_ps(a00, gd, _mm512_loadu_ps(gv00 + d)));
      _mm512_storeu_ps(gv01 + d, _mm512_fmadd_ps(a01, gd, _mm512_loadu_ps(gv01 + d)));
      _mm512_storeu_ps(gv10 + d, _mm512_fmadd_ps(a10, gd, _mm512_loadu_ps(gv10 + d)));
      _mm512_storeu_ps(gv11 + d, _mm512_fmadd_ps(a11, gd, _mm512_loadu_ps(gv11 + d)));
    }
    dots[0] = _mm512_reduce_add_ps(s00);
    dots[1] = _mm512_reduce_add_ps(s01);
    dots[2] = _mm512_reduce_add_ps(s10);
    dots[3] = _mm512_reduce_add_ps(s11);
    return;
  }
#endif
  acc_t dot00 = 0, dot01 = 0, dot10 = 0, dot11 = 0;
#pragma omp simd reduction(+ : dot00, dot01, dot10, dot11)
  for (int64_t d = 0; d < D; ++d) {
    const acc_t gd = g[d];
    dot00 += gd * static_cast<acc_t>(v00[d]);
    dot01 += gd * static_cast<acc_t>(v01[d]);
    dot10 += gd * static_cast<acc_t>(v10[d]);
    dot11 += gd * static_cast<acc_t>(v11[d]);
    gv00[d] += w00 * gd;
    gv01[d] += w01 * gd;
    gv10[d] += w10 * gd;
    gv11[d] += w11 * gd;
  }
  dots[0] = dot00;
  dots[1] = dot01;
  dots[2] = dot10;
  dots[3] = dot11;
}

// kD > 0: the head dim D known at compile time (the common sizes), so the accumulator lives in
// registers and the channel loops unroll fully; kD == 0: any D.
template <typename scalar_t, int kD>
void forward_kernel(const scalar_t* __restrict__ value, const int64_t* spatial_shapes, const int64_t* level_start_index,
                    const scalar_t* __restrict__ sampling_locations,
                    const scalar_t* __restrict__ attention_weights, scalar_t* __restrict__ output, const Sizes& n) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t D = kD > 0 ? kD : n.D, M = n.M, L = n.L, P = n.P;
  const int64_t pixel_stride = M * D;  // between neighbouring pixels of one head
  // Queries are handed out in blocks from a shared counter, so a thread that gets less CPU time
  // (a busy machine, or a slower core) does less of the work. ~M * L * P * 4 * D flops per query:
  // a block of a few hundred queries amortises the counter.
  const int64_t total = n.B * n.Lq;
  const int64_t block = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, M * L * P * D));
  const int64_t blocks = (total + block - 1) / block;
  std::atomic<int64_t> next_block{0};
  at::parallel_for(0, std::min<int64_t>(blocks, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    alignas(64) acc_t fixed_accumulator[kD > 0 ? kD : 1];
    std::vector<acc_t> any_accumulator(kD > 0 ? 0 : D);
    acc_t* __restrict__ acc = kD > 0 ? fixed_accumulator : any_accumulator.data();
    Corners<acc_t> c;
    for (int64_t taken = next_block++; taken < blocks; taken = next_block++)
    for (int64_t bq = taken * block; bq < std::min(total, (taken + 1) * block); ++bq) {
      const int64_t b = bq / n.Lq;
      const scalar_t* batch_value = value + b * n.S * pixel_stride;
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t d = 0; d < D; ++d) acc[d] = 0;
        bool poisoned = false;
        const scalar_t* loc = sampling_locations + (bq * M + m) * L * P * 2;  // (L, P, 2)
        const scalar_t* weight = attention_weights + (bq * M + m) * L * P;   // (L, P)
        for (int64_t l = 0; l < L; ++l) {
          const int64_t height = spatial_shapes[2 * l], width = spatial_shapes[2 * l + 1];
          const scalar_t* level_value = batch_value + level_start_index[l] * pixel_stride + m * D;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t lp = l * P + p;
            const acc_t x = static_cast<acc_t>(loc[2 * lp]) * width - acc_t(0.5);
            const acc_t y = static_cast<acc_t>(loc[2 * lp + 1]) * height - acc_t(0.5);
            const acc_t a = static_cast<acc_t>(weight[lp]);
            // Forward may skip exactly-zero samples: every neighbour outside or at weight 0. As in
            // grid_sample, a non-finite location or weight still poisons the sum (weight * 0 = NaN).
            if (!(x > -1 && y > -1 && x < width && y < height)) {
              if (!(std::isfinite(x) && std::isfinite(y) && std::isfinite(a))) poisoned = true;
              continue;
            }
            if (x >= 0 && y >= 0 && x < width - 1 && y < height - 1) {
              // Fast path, all four neighbours inside: one pass over the channels.
              const acc_t x_floor = std::floor(x), y_floor = std::floor(y);
              const int64_t x0 = static_cast<int64_t>(x_floor), y0 = static_cast<int64_t>(y_floor);
              const acc_t lx = x - x_floor, ly = y - y_floor, hx = 1 - lx, hy = 1 - ly;
              const acc_t w00 = a * hy * hx, w01 = a * hy * lx, w10 = a * ly * hx, w11 = a * ly * lx;
              const scalar_t* __restrict__ v00 = level_value + (y0 * width + x0) * pixel_stride;
              const scalar_t* __restrict__ v01 = v00 + pixel_stride;
              const scalar_t* __restrict__ v10 = v00 + width * pixel_stride;
              const scalar_t* __restrict__ v11 = v10 + pixel_stride;
#if defined(__AVX512F__)
              if constexpr (kAvx512Channels<scalar_t, kD>) {  // explicit: 16-bit inputs convert 16 at a time
                for (int d = 0; d < kD; d += 16) {
                  __m512 sum = _mm512_fmadd_ps(_mm512_set1_ps(w00), load16(v00 + d), _mm512_loadu_ps(acc + d));
                  sum = _mm512_fmadd_ps(_mm512_set1_ps(w01), load16(v01 + d), sum);
                  sum = _mm512_fmadd_ps(_mm512_set1_ps(w10), load16(v10 + d), sum);
                  _mm512_storeu_ps(acc + d, _mm512_fmadd_ps(_mm512_set1_ps(w11), load16(v11 + d), sum));
                }
                continue;
              }
#endif
#pragma omp simd
              for (int64_t d = 0; d < D; ++d) {
                acc[d] += w00 * static_cast<acc_t>(v00[d]) + w01 * static_cast<acc_t>(v01[d]) +
                          w10 * static_cast<acc_t>(v10[d]) + w11 * static_cast<acc_t>(v11[d]);
              }
              continue;
            }
            bilinear_corners<acc_t>(x, y, height, width, c);  // near the border: corner by corner
            for (int k = 0; k < 4; ++k) {
              if (c.index[k] < 0) continue;
              const acc_t cw = a * c.weight[k];
              const scalar_t* __restrict__ v = level_value + c.index[k] * pixel_stride;
#pragma omp simd
              for (int64_t d = 0; d < D; ++d) acc[d] += cw * static_cast<acc_t>(v[d]);
            }
          }
        }
        scalar_t* out = output + (bq * M + m) * D;
        if (poisoned) {
          for (int64_t d = 0; d < D; ++d) out[d] = std::numeric_limits<scalar_t>::quiet_NaN();
          continue;
        }
        for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(acc[d]);
      }
    }
  });
}

// grad_value_acc: (chunks, B, S, M, D) in acc_t, zero on entry.
template <typename scalar_t, int kD>
void backward_kernel(const scalar_t* __restrict__ grad_output, const scalar_t* __restrict__ value,
                     const int64_t* spatial_shapes, const int64_t* level_start_index,
                     const scalar_t* __restrict__ sampling_locations, const scalar_t* __restrict__ attention_weights,
                     at::opmath_type<scalar_t>* __restrict__ grad_value_acc,
                     scalar_t* __restrict__ grad_sampling_locations, scalar_t* __restrict__ grad_attention_weights,
                     const Sizes& n, int64_t chunks) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t D = kD > 0 ? kD : n.D, M = n.M, L = n.L, P = n.P, Lq = n.Lq;
  const int64_t pixel_stride = M * D;
  const int64_t queries_per_chunk = (Lq + chunks - 1) / chunks;
  // Task index ((chunk * B) + b) * M + m. A thread gets a contiguous range of tasks, i.e. a group of
  // heads of one (chunk, batch), and walks it query by query, heads inside: the per-query inputs
  // and outputs are then read and written nearly sequentially.
  at::parallel_for(0, chunks * n.B * M, 1, [&](int64_t begin, int64_t end) {
    alignas(64) acc_t fixed_grad[kD > 0 ? kD : 1];
    std::vector<acc_t> any_grad(kD > 0 ? 0 : D);
    acc_t* __restrict__ g = kD > 0 ? fixed_grad : any_grad.data();
    Corners<acc_t> c;
    for (int64_t first = begin; first < end;) {
      const int64_t chunk = first / (n.B * M), b = (first / M) % n.B;
      const int64_t m_begin = first % M, m_end = std::min(M, m_begin + (end - first));
      first += m_end - m_begin;
      const scalar_t* batch_value = value + b * n.S * pixel_stride;
      acc_t* batch_grad_value = grad_value_acc + (chunk * n.B + b) * n.S * pixel_stride;
      const int64_t q_end = std::min(Lq, (chunk + 1) * queries_per_chunk);
      for (int64_t q = chunk * queries_per_chunk; q < q_end; ++q)
      for (int64_t m = m_begin; m < m_end; ++m) {
        const int64_t bqm = (b * Lq + q) * M + m;
        const scalar_t* go = grad_output + bqm * D;
        for (int64_t d = 0; d < D; ++d) g[d] = static_cast<acc_t>(go[d]);
        const scalar_t* loc = sampling_locations + bqm * L * P * 2;
        const scalar_t* weight = attention_weights + bqm * L * P;
        scalar_t* grad_loc = grad_sampling_locations + bqm * L * P * 2;
        scalar_t* grad_weight = grad_attention_weights + bqm * L * P;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t height = spatial_shapes[2 * l], width = spatial_shapes[2 * l + 1];
          const int64_t level_offset = level_start_index[l] * pixel_stride + m * D;
          const scalar_t* level_value = batch_value + level_offset;
          acc_t* level_grad_value = batch_grad_value + level_offset;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t lp = l * P + p;
            const acc_t x = static_cast<acc_t>(loc[2 * lp]) * width - acc_t(0.5);
            const acc_t y = static_cast<acc_t>(loc[2 * lp + 1]) * height - acc_t(0.5);
            acc_t sample_dot = 0, grad_x = 0, grad_y = 0;  // <g, sample>, d<g, sample>/dx, /dy
            const acc_t a = static_cast<acc_t>(weight[lp]);
            if (x >= 0 && y >= 0 && x < width - 1 && y < height - 1) {
              // Fast path, all four neighbours inside: one pass over the channels for the four
              // dot products <g, v_k> and the four grad_value updates.
              const acc_t x_floor = std::floor(x), y_floor = std::floor(y);
              const int64_t x0 = static_cast<int64_t>(x_floor), y0 = static_cast<int64_t>(y_floor);
              const acc_t lx = x - x_floor, ly = y - y_floor, hx = 1 - lx, hy = 1 - ly;
              const acc_t w00 = a * hy * hx, w01 = a * hy * lx, w10 = a * ly * hx, w11 = a * ly * lx;
              const int64_t offset = (y0 * width + x0) * pixel_stride, row = width * pixel_stride;
              const scalar_t* __restrict__ v00 = level_value + offset;
              const scalar_t* __restrict__ v01 = v00 + pixel_stride;
              const scalar_t* __restrict__ v10 = v00 + row;
              const scalar_t* __restrict__ v11 = v10 + pixel_stride;
              acc_t* __restrict__ gv00 = level_grad_value + offset;
              acc_t* __restrict__ gv01 = gv00 + pixel_stride;
              acc_t* __restrict__ gv10 = gv00 + row;
              acc_t* __restrict__ gv11 = gv10 + pixel_stride;
              acc_t dots[4];
              corner_dots_and_updates<scalar_t, acc_t, kD>(D, g, v00, v01, v10, v11, gv00, gv01, gv10, gv11, w00, w01,
                                                           w10, w11, dots);
              const acc_t dot00 = dots[0], dot01 = dots[1], dot10 = dots[2], dot11 = dots[3];
              sample_dot = hy * (hx * dot00 + lx * dot01) + ly * (hx * dot10 + lx * dot11);
              grad_x = a * width * (hy * (dot01 - dot00) + ly * (dot11 - dot10));  // d x / d loc_x = W_l
              grad_y = a * height * (hx * (dot10 - dot00) + lx * (dot11 - dot01));
            } else if (bilinear_corners<acc_t>(x, y, height, width, c)) {  // near the border
              for (int k = 0; k < 4; ++k) {
                if (c.index[k] < 0) continue;
                const acc_t cw = a * c.weight[k];
                const scalar_t* __restrict__ v = level_value + c.index[k] * pixel_stride;
                acc_t* __restrict__ gv = level_grad_value + c.index[k] * pixel_stride;
                acc_t dot = 0;
#pragma omp simd reduction(+ : dot)
                for (int64_t d = 0; d < D; ++d) {
                  dot += g[d] * static_cast<acc_t>(v[d]);
                  gv[d] += cw * g[d];
                }
                sample_dot += c.weight[k] * dot;
                grad_x += c.dweight_dx[k] * dot;
                grad_y += c.dweight_dy[k] * dot;
              }
              grad_x *= a * width;  // d x / d loc_x = W_l
              grad_y *= a * height;
            }
            if (!(std::isfinite(x) && std::isfinite(y))) {  // let a non-finite location surface as NaN
              sample_dot = grad_x = grad_y = std::numeric_limits<acc_t>::quiet_NaN();
            }
            grad_weight[lp] = static_cast<scalar_t>(sample_dot);
            grad_loc[2 * lp] = static_cast<scalar_t>(grad_x);
            grad_loc[2 * lp + 1] = static_cast<scalar_t>(grad_y);
          }
        }
      }
    }
  });
}

Sizes check_and_size(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                     const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn_cpu: tensors must be on the CPU");
  TORCH_CHECK(value.dim() == 4 && sampling_locations.dim() == 6 && attention_weights.dim() == 5,
              "ms_deform_attn_cpu: bad ranks");
  TORCH_CHECK(value.is_contiguous() && sampling_locations.is_contiguous() && attention_weights.is_contiguous() &&
                  spatial_shapes.is_contiguous() && level_start_index.is_contiguous(),
              "ms_deform_attn_cpu: inputs must be contiguous");
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn_cpu: spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type(),
              "ms_deform_attn_cpu: value, sampling_locations and attention_weights must share a dtype");
  return Sizes{value.size(0), value.size(1), value.size(2), value.size(3),
               sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
}

// Calls body with kD = D for the common head dims, kD = 0 otherwise.
template <typename Body>
void dispatch_head_dim(int64_t D, Body&& body) {
  switch (D) {
    case 8: body(std::integral_constant<int, 8>{}); break;
    case 16: body(std::integral_constant<int, 16>{}); break;
    case 32: body(std::integral_constant<int, 32>{}); break;
    case 64: body(std::integral_constant<int, 64>{}); break;
    default: body(std::integral_constant<int, 0>{});
  }
}

}  // namespace

at::Tensor ms_deform_attn_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                  const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                  const at::Tensor& attention_weights) {
  const Sizes n = check_and_size(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  at::Tensor output = at::empty({n.B, n.Lq, n.M * n.D}, value.options());
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward", [&] {
    dispatch_head_dim(n.D, [&](auto head_dim) {
      forward_kernel<scalar_t, decltype(head_dim)::value>(
          value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
          sampling_locations.data_ptr<scalar_t>(), attention_weights.data_ptr<scalar_t>(),
          output.data_ptr<scalar_t>(), n);
    });
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_backward(const at::Tensor& grad_output, const at::Tensor& value,
                                                const at::Tensor& spatial_shapes,
                                                const at::Tensor& level_start_index,
                                                const at::Tensor& sampling_locations,
                                                const at::Tensor& attention_weights) {
  const Sizes n = check_and_size(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.numel() == n.B * n.Lq * n.M * n.D,
              "ms_deform_attn_cpu: grad_output must be a contiguous (B, Lq, M * D) tensor of value's dtype");
  if (n.B * n.Lq * n.M * n.D == 0 || n.S == 0) {
    return {at::zeros_like(value), at::zeros_like(sampling_locations), at::zeros_like(attention_weights)};
  }
  // Every element of these two is written by the kernel (zero where a point reads nothing).
  at::Tensor grad_sampling_locations = at::empty_like(sampling_locations);
  at::Tensor grad_attention_weights = at::empty_like(attention_weights);
  // Split queries into chunks only when the (batch, head) pairs cannot keep every thread busy.
  const int64_t pairs = n.B * n.M;
  const int64_t threads = at::get_num_threads();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((threads + pairs - 1) / pairs, n.Lq));
  const auto acc_type = at::toOpMathType(value.scalar_type());
  const bool accumulate_in_place = chunks == 1 && acc_type == value.scalar_type();
  at::Tensor grad_value_acc = accumulate_in_place
                                  ? at::zeros_like(value)
                                  : at::zeros({chunks, n.B, n.S, n.M, n.D}, value.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_head_dim(n.D, [&](auto head_dim) {
      backward_kernel<scalar_t, decltype(head_dim)::value>(
          grad_output.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>(),
          attention_weights.data_ptr<scalar_t>(), grad_value_acc.data_ptr<acc_t>(),
          grad_sampling_locations.data_ptr<scalar_t>(), grad_attention_weights.data_ptr<scalar_t>(), n, chunks);
    });
  });
  at::Tensor grad_value =
      accumulate_in_place ? grad_value_acc : grad_value_acc.sum(0).to(value.scalar_type());  // (B, S, M, D)
  return {grad_value, grad_sampling_locations, grad_attention_weights};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ms_deform_attn_forward, "multi-scale deformable attention forward (CPU)");
  m.def("backward", &ms_deform_attn_backward, "multi-scale deformable attention backward (CPU)");
}
