#include "kto/model/fused_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "kto/util/check.h"

// Built with -ffp-contract=off (src/CMakeLists.txt): a*b + c*d must round like ATen's separate
// multiply and add kernels, not fuse into an FMA, or the bits would differ from the unfused path.

namespace kto::model::fused {
namespace {

// Arithmetic on one storage type: values are loaded into C, every operation's result rounded
// back to the storage precision (a no-op for fp32 and fp64; round-to-nearest-even to bf16, as
// c10::BFloat16 does, for bf16).
template <typename S>
struct Num {
  using C = S;
  static inline C load(S v) { return v; }
  static inline S store(C v) { return v; }
  static inline C round(C v) { return v; }
};

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint16_t bf16_bits(float f) {
  if (f != f) return UINT16_C(0x7FC0);  // c10's NaN
  const uint32_t u = float_bits(f);
  return static_cast<uint16_t>((u + UINT32_C(0x7FFF) + ((u >> 16) & 1)) >> 16);
}

template <>
struct Num<uint16_t> {  // bf16 bits
  using C = float;
  static inline C load(uint16_t v) { return bits_float(static_cast<uint32_t>(v) << 16); }
  static inline uint16_t store(C v) { return bf16_bits(v); }
  static inline C round(C v) { return load(bf16_bits(v)); }
};

// One head: y = x*cos + rotate_half(x)*sin on the first R dims, a copy of the rest.
template <typename S>
inline __attribute__((always_inline)) void rotate_head(const S* __restrict x, const S* __restrict c,
                                                       const S* __restrict s, S* __restrict y, int64_t R,
                                                       int64_t D) {
  using N = Num<S>;
  const int64_t h = R / 2;
  for (int64_t j = 0; j < h; ++j) {
    const auto a = N::round(N::load(x[j]) * N::load(c[j]));
    const auto b = N::round(-N::load(x[j + h]) * N::load(s[j]));
    y[j] = N::store(a + b);
  }
  for (int64_t j = h; j < R; ++j) {
    const auto a = N::round(N::load(x[j]) * N::load(c[j]));
    const auto b = N::round(N::load(x[j - h]) * N::load(s[j]));
    y[j] = N::store(a + b);
  }
  for (int64_t j = R; j < D; ++j) y[j] = x[j];
}

// Its gradient, as autograd composes it: g*cos, plus rotate_half's transpose of g*sin.
template <typename S>
inline __attribute__((always_inline)) void rotate_head_backward(const S* __restrict g, const S* __restrict c,
                                                                const S* __restrict s, S* __restrict gx,
                                                                int64_t R, int64_t D) {
  using N = Num<S>;
  const int64_t h = R / 2;
  for (int64_t j = 0; j < h; ++j) {
    const auto a = N::round(N::load(g[j]) * N::load(c[j]));
    const auto b = N::round(N::load(g[j + h]) * N::load(s[j + h]));
    gx[j] = N::store(a + b);
  }
  for (int64_t j = h; j < R; ++j) {
    const auto a = N::round(N::load(g[j]) * N::load(c[j]));
    const auto b = -N::round(N::load(g[j - h]) * N::load(s[j - h]));
    gx[j] = N::store(a + b);
  }
  for (int64_t j = R; j < D; ++j) gx[j] = g[j];
}

struct Geometry {
  int64_t B, T, W, H, Hkv, D, R;
  QkvLayout layout;
  int64_t q_offset(int64_t h) const { return layout == QkvLayout::llama ? h * D : h * 3 * D; }
  int64_t k_offset(int64_t g) const { return layout == QkvLayout::llama ? (H + g) * D : g * 3 * D + D; }
  int64_t v_offset(int64_t g) const {
    return layout == QkvLayout::llama ? (H + Hkv + g) * D : g * 3 * D + 2 * D;
  }
};

// Rows [r0, r1) of B*T: qkv -> rotated q, k and plain v in head-major layout.
template <typename S>
inline __attribute__((always_inline)) void forward_rows(const Geometry& G, const S* qkv, const S* cos,
                                                        const S* sin, S* q, S* k, S* v, int64_t r0,
                                                        int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / G.T, t = r % G.T;
    const S* row = qkv + r * G.W;
    const S* c = cos + t * G.R;
    const S* s = sin + t * G.R;
    for (int64_t h = 0; h < G.H; ++h)
      rotate_head(row + G.q_offset(h), c, s, q + ((b * G.H + h) * G.T + t) * G.D, G.R, G.D);
    for (int64_t g = 0; g < G.Hkv; ++g) {
      const int64_t at = ((b * G.Hkv + g) * G.T + t) * G.D;
      rotate_head(row + G.k_offset(g), c, s, k + at, G.R, G.D);
      std::memcpy(v + at, row + G.v_offset(g), sizeof(S) * G.D);
    }
  }
}

// The gradient of rows [r0, r1) of qkv from those of q, k, v (null: zero).
template <typename S>
inline __attribute__((always_inline)) void backward_rows(const Geometry& G, const S* gq, const S* gk,
                                                         const S* gv, const S* cos, const S* sin, S* gqkv,
                                                         int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / G.T, t = r % G.T;
    S* row = gqkv + r * G.W;
    const S* c = cos + t * G.R;
    const S* s = sin + t * G.R;
    for (int64_t h = 0; h < G.H; ++h) {
      S* out = row + G.q_offset(h);
      if (gq)
        rotate_head_backward(gq + ((b * G.H + h) * G.T + t) * G.D, c, s, out, G.R, G.D);
      else
        std::memset(out, 0, sizeof(S) * G.D);
    }
    for (int64_t g = 0; g < G.Hkv; ++g) {
      const int64_t at = ((b * G.Hkv + g) * G.T + t) * G.D;
      S* ko = row + G.k_offset(g);
      S* vo = row + G.v_offset(g);
      if (gk)
        rotate_head_backward(gk + at, c, s, ko, G.R, G.D);
      else
        std::memset(ko, 0, sizeof(S) * G.D);
      if (gv)
        std::memcpy(vo, gv + at, sizeof(S) * G.D);
      else
        std::memset(vo, 0, sizeof(S) * G.D);
    }
  }
}

// Compiled for AVX-512, AVX2 and baseline x86-64, chosen at load time by the CPU.
#define KTO_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

KTO_CLONES void forward_f32(const Geometry& G, const float* qkv, const float* c, const float* s, float* q,
                            float* k, float* v, int64_t r0, int64_t r1) {
  forward_rows(G, qkv, c, s, q, k, v, r0, r1);
}
KTO_CLONES void forward_f64(const Geometry& G, const double* qkv, const double* c, const double* s, double* q,
                            double* k, double* v, int64_t r0, int64_t r1) {
  forward_rows(G, qkv, c, s, q, k, v, r0, r1);
}
KTO_CLONES void forward_bf16(const Geometry& G, const uint16_t* qkv, const uint16_t* c, const uint16_t* s,
                             uint16_t* q, uint16_t* k, uint16_t* v, int64_t r0, int64_t r1) {
  forward_rows(G, qkv, c, s, q, k, v, r0, r1);
}
KTO_CLONES void backward_f32(const Geometry& G, const float* gq, const float* gk, const float* gv,
                             const float* c, const float* s, float* out, int64_t r0, int64_t r1) {
  backward_rows(G, gq, gk, gv, c, s, out, r0, r1);
}
KTO_CLONES void backward_f64(const Geometry& G, const double* gq, const double* gk, const double* gv,
                             const double* c, const double* s, double* out, int64_t r0, int64_t r1) {
  backward_rows(G, gq, gk, gv, c, s, out, r0, r1);
}
KTO_CLONES void backward_bf16(const Geometry& G, const uint16_t* gq, const uint16_t* gk, const uint16_t* gv,
                              const uint16_t* c, const uint16_t* s, uint16_t* out, int64_t r0, int64_t r1) {
  backward_rows(G, gq, gk, gv, c, s, out, r0, r1);
}

template <typename S>
S* ptr(const at::Tensor& t) {
  return t.defined() ? static_cast<S*>(t.data_ptr()) : nullptr;
}

constexpr int64_t kRowGrain = 16;

void run_forward(const Geometry& G, const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                 at::Tensor& q, at::Tensor& k, at::Tensor& v) {
  at::parallel_for(0, G.B * G.T, kRowGrain, [&](int64_t r0, int64_t r1) {
    switch (qkv.scalar_type()) {
      case at::kFloat:
        forward_f32(G, ptr<float>(qkv), ptr<float>(cos), ptr<float>(sin), ptr<float>(q), ptr<float>(k),
                    ptr<float>(v), r0, r1);
        break;
      case at::kDouble:
        forward_f64(G, ptr<double>(qkv), ptr<double>(cos), ptr<double>(sin), ptr<double>(q), ptr<double>(k),
                    ptr<double>(v), r0, r1);
        break;
      default:
        forward_bf16(G, ptr<uint16_t>(qkv), ptr<uint16_t>(cos), ptr<uint16_t>(sin), ptr<uint16_t>(q),
                     ptr<uint16_t>(k), ptr<uint16_t>(v), r0, r1);
    }
  });
}

void run_backward(const Geometry& G, const at::Tensor& gq, const at::Tensor& gk, const at::Tensor& gv,
                  const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out) {
  at::parallel_for(0, G.B * G.T, kRowGrain, [&](int64_t r0, int64_t r1) {
    switch (out.scalar_type()) {
      case at::kFloat:
        backward_f32(G, ptr<float>(gq), ptr<float>(gk), ptr<float>(gv), ptr<float>(cos), ptr<float>(sin),
                     ptr<float>(out), r0, r1);
        break;
      case at::kDouble:
        backward_f64(G, ptr<double>(gq), ptr<double>(gk), ptr<double>(gv), ptr<double>(cos), ptr<double>(sin),
                     ptr<double>(out), r0, r1);
        break;
      default:
        backward_bf16(G, ptr<uint16_t>(gq), ptr<uint16_t>(gk), ptr<uint16_t>(gv), ptr<uint16_t>(cos),
                      ptr<uint16_t>(sin), ptr<uint16_t>(out), r0, r1);
    }
  });
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Geometry geometry(const at::Tensor& qkv, const at::Tensor& cos, int64_t H, int64_t Hkv, int64_t D,
                  QkvLayout layout) {
  Geometry G{qkv.size(0), qkv.size(1), qkv.size(2), H, Hkv, D, cos.size(-1), layout};
  KTO_CHECK(G.W == (layout == QkvLayout::llama ? (H + 2 * Hkv) * D : 3 * H * D) &&
                (layout == QkvLayout::llama || H == Hkv),
            "rope_heads: qkv rows of ", G.W, " do not hold ", H, "/", Hkv, " heads of ", D);
  KTO_CHECK(G.R % 2 == 0 && G.R <= D && cos.dim() == 2 && cos.size(0) == G.T, "rope_heads: tables ",
            cos.sizes(), " do not fit ", G.T, " positions of head size ", D);
  return G;
}

class RopeHeads : public torch::autograd::Function<RopeHeads> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& qkv_in, const at::Tensor& cos_in,
                               const at::Tensor& sin_in, int64_t H, int64_t Hkv, int64_t D, int64_t layout) {
    const at::Tensor qkv = qkv_in.contiguous(), cos = cos_in.contiguous(), sin = sin_in.contiguous();
    KTO_CHECK(sin.sizes() == cos.sizes(), "rope_heads: sin ", sin.sizes(), " and cos ", cos.sizes(),
              " differ");
    const Geometry G = geometry(qkv, cos, H, Hkv, D, static_cast<QkvLayout>(layout));
    at::Tensor q = at::empty({G.B, H, G.T, D}, qkv.options());
    at::Tensor k = at::empty({G.B, Hkv, G.T, D}, qkv.options());
    at::Tensor v = at::empty({G.B, Hkv, G.T, D}, qkv.options());
    run_forward(G, qkv, cos, sin, q, k, v);
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["geometry"] = std::vector<int64_t>{G.B, G.T, G.W, H, Hkv, D, layout};
    return {q, k, v};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const std::vector<int64_t> g = ctx->saved_data["geometry"].toIntVector();
    const Geometry G{g[0], g[1], g[2], g[3], g[4], g[5], saved[0].size(-1), static_cast<QkvLayout>(g[6])};
    const auto dense = [](const at::Tensor& t) { return t.defined() ? t.contiguous() : t; };
    const at::Tensor gq = dense(grads[0]), gk = dense(grads[1]), gv = dense(grads[2]);
    const at::Tensor any = gq.defined() ? gq : gk.defined() ? gk : gv;
    if (!any.defined())
      return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
              at::Tensor(), at::Tensor(), at::Tensor()};
    at::Tensor out = at::empty({G.B, G.T, G.W}, any.options());
    run_backward(G, gq, gk, gv, saved[0], saved[1], out);
    return {out, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// ---- masked softmax -------------------------------------------------------------------------

// 16 fp32 lanes: one AVX-512 register, two AVX2 ones, four SSE ones in the baseline clone.
constexpr int64_t kLanes = 16;
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IntLanes __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline __attribute__((always_inline)) Lanes load_lanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline __attribute__((always_inline)) void store_lanes(float* p, Lanes v) { std::memcpy(p, &v, sizeof v); }
inline __attribute__((always_inline)) Lanes splat(float f) { return Lanes{} + f; }

// exp(x) lane-wise: x = n ln2 + r, |r| <= ln2/2, e^r by Cephes' degree-7 polynomial, times 2^n
// (as 2^(n-1) * 2 at n = 128, the top of the float range); within 1 ulp of the exact value over
// [-87, 88.7] (tests/unit/test_fused_cpu.cpp); 0 below -87.3, +inf above 88.72, NaN for NaN.
// NaN lanes are set aside before the float-to-int conversions (undefined for NaN).
inline __attribute__((always_inline)) Lanes exp_lanes(Lanes in) {
  const auto nan = in != in;
  const auto tiny = in < -87.3f;
  const auto huge = in > 88.72f;
  Lanes x = nan ? splat(0.0f) : in;
  x = tiny ? splat(-87.3f) : x;
  x = huge ? splat(88.72f) : x;
  const Lanes t = x * 1.44269504088896341f + 0.5f;
  Lanes n = __builtin_convertvector(__builtin_convertvector(t, IntLanes), Lanes);
  n = n > t ? n - 1.0f : n;  // floor
  Lanes r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Lanes p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Lanes e = p * r * r + r + 1.0f;
  IntLanes ni = __builtin_convertvector(n, IntLanes);
  const auto top = ni > 127;
  ni = top ? ni - 1 : ni;
  const IntLanes bits = (ni + 127) << 23;
  Lanes scale;
  std::memcpy(&scale, &bits, sizeof scale);
  Lanes out = e * scale;
  out = top ? out * 2.0f : out;
  out = tiny ? splat(0.0f) : out;
  out = huge ? splat(INFINITY) : out;
  return nan ? in : out;
}

// One row in place: v = x*scale (+ mask), then softmax over its first `n` entries.
inline __attribute__((always_inline)) void softmax_row(float* __restrict x, const float* __restrict mask,
                                                       int64_t n, float scale) {
  const int64_t full = n / kLanes * kLanes;
  Lanes mx = splat(-INFINITY);
  for (int64_t j = 0; j < full; j += kLanes) {
    Lanes v = load_lanes(x + j) * scale;
    if (mask) v += load_lanes(mask + j);
    store_lanes(x + j, v);
    mx = v > mx ? v : mx;
  }
  float m = -INFINITY;
  for (int64_t k = 0; k < kLanes; ++k) m = mx[k] > m ? mx[k] : m;
  for (int64_t j = full; j < n; ++j) {
    float v = x[j] * scale;
    if (mask) v += mask[j];
    x[j] = v;
    m = v > m ? v : m;
  }
  // Entry j is summed in lane j % 16, the lanes then in order: the same sum whether the row
  // stops at n or runs on through masked (exactly 0) entries.
  Lanes sum = splat(0.0f);
  for (int64_t j = 0; j < full; j += kLanes) {
    const Lanes e = exp_lanes(load_lanes(x + j) - m);
    store_lanes(x + j, e);
    sum += e;
  }
  if (full < n) {
    float tail[kLanes];
    for (int64_t k = 0; k < kLanes; ++k) tail[k] = full + k < n ? x[full + k] - m : -INFINITY;
    const Lanes e = exp_lanes(load_lanes(tail));
    for (int64_t j = full; j < n; ++j) x[j] = e[j - full];
    sum += e;
  }
  float total = 0;
  for (int64_t k = 0; k < kLanes; ++k) total += sum[k];
  const float inv = 1.0f / total;
  for (int64_t j = 0; j < n; ++j) x[j] *= inv;
}

// dx = scale * p * (g - sum(g * p)) over the first n entries.
inline __attribute__((always_inline)) void softmax_backward_row(const float* __restrict p,
                                                                const float* __restrict g,
                                                                float* __restrict dx, int64_t n,
                                                                float scale) {
  const int64_t full = n / kLanes * kLanes;
  Lanes acc = splat(0.0f);
  for (int64_t j = 0; j < full; j += kLanes) acc += load_lanes(g + j) * load_lanes(p + j);
  if (full < n) {
    float gt[kLanes] = {}, pt[kLanes] = {};
    std::memcpy(gt, g + full, sizeof(float) * static_cast<size_t>(n - full));
    std::memcpy(pt, p + full, sizeof(float) * static_cast<size_t>(n - full));
    acc += load_lanes(gt) * load_lanes(pt);
  }
  float dot = 0;
  for (int64_t k = 0; k < kLanes; ++k) dot += acc[k];
  for (int64_t j = 0; j < n; ++j) dx[j] = p[j] * (g[j] - dot) * scale;
}

struct SoftmaxGeometry {
  int64_t rows_per_matrix, Tq, Tk;
  float scale;
  bool causal;
  // Keys row r computes: all, or up to its query's position under the causal mask.
  int64_t keys(int64_t r) const { return causal ? r % rows_per_matrix % Tq + 1 : Tk; }
  int64_t query(int64_t r) const { return r % rows_per_matrix % Tq; }
};

// Rows [r0, r1): scores (fp32 or bf16 bits) -> fp32 probabilities p32 (and bf16 ones in out16).
template <typename S>
inline __attribute__((always_inline)) void softmax_rows(const SoftmaxGeometry& G, const S* scores,
                                                        const float* mask, float* p32, uint16_t* out16,
                                                        int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = p32 + r * G.Tk;
    const S* in = scores + r * G.Tk;
    const int64_t n = G.keys(r);
    if constexpr (std::is_same_v<S, float>) {
      if (row != in) std::memcpy(row, in, sizeof(float) * n);
    } else {
      for (int64_t j = 0; j < n; ++j) row[j] = Num<uint16_t>::load(in[j]);
    }
    softmax_row(row, G.causal ? nullptr : mask + G.query(r) * G.Tk, n, G.scale);
    for (int64_t j = n; j < G.Tk; ++j) row[j] = 0.0f;
    if (out16)
      for (int64_t j = 0; j < G.Tk; ++j) out16[r * G.Tk + j] = Num<uint16_t>::store(row[j]);
  }
}

// Rows [r0, r1) of the gradient: from dprobs (fp32 or bf16 bits) and the fp32 probabilities.
template <typename S>
inline __attribute__((always_inline)) void softmax_backward_rows(const SoftmaxGeometry& G, const float* p32,
                                                                 const S* grad, S* out, float* tmp,
                                                                 int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = G.keys(r);
    const float* p = p32 + r * G.Tk;
    if constexpr (std::is_same_v<S, float>) {
      softmax_backward_row(p, grad + r * G.Tk, out + r * G.Tk, n, G.scale);
      for (int64_t j = n; j < G.Tk; ++j) out[r * G.Tk + j] = 0.0f;
    } else {
      for (int64_t j = 0; j < n; ++j) tmp[G.Tk + j] = Num<uint16_t>::load(grad[r * G.Tk + j]);
      softmax_backward_row(p, tmp + G.Tk, tmp, n, G.scale);
      for (int64_t j = 0; j < n; ++j) out[r * G.Tk + j] = Num<uint16_t>::store(tmp[j]);
      for (int64_t j = n; j < G.Tk; ++j) out[r * G.Tk + j] = 0;
    }
  }
}

KTO_CLONES void softmax_f32(const SoftmaxGeometry& G, const float* s, const float* mask, float* p32,
                            int64_t r0, int64_t r1) {
  softmax_rows<float>(G, s, mask, p32, nullptr, r0, r1);
}
KTO_CLONES void softmax_bf16(const SoftmaxGeometry& G, const uint16_t* s, const float* mask, float* p32,
                             uint16_t* out, int64_t r0, int64_t r1) {
  softmax_rows<uint16_t>(G, s, mask, p32, out, r0, r1);
}
KTO_CLONES void softmax_backward_f32(const SoftmaxGeometry& G, const float* p32, const float* g, float* out,
                                     int64_t r0, int64_t r1) {
  softmax_backward_rows<float>(G, p32, g, out, nullptr, r0, r1);
}
KTO_CLONES void softmax_backward_bf16(const SoftmaxGeometry& G, const float* p32, const uint16_t* g,
                                      uint16_t* out, float* tmp, int64_t r0, int64_t r1) {
  softmax_backward_rows<uint16_t>(G, p32, g, out, tmp, r0, r1);
}

constexpr int64_t kSoftmaxGrain = 64;

class MaskedSoftmax : public torch::autograd::Function<MaskedSoftmax> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& scores_in, double scale,
                            const at::Tensor& mask_in, bool causal) {
    const at::Tensor scores = scores_in.contiguous();
    const at::Tensor mask = causal ? at::Tensor() : mask_in.to(at::kFloat).contiguous();
    const int64_t Tk = scores.size(-1), R = scores.size(-2), rows = scores.numel() / std::max<int64_t>(Tk, 1);
    KTO_CHECK(mask_in.defined() && mask_in.dim() == 2, "masked_softmax: the mask must be [Tq, Tk]");
    const int64_t Tq = mask_in.size(0);
    KTO_CHECK(mask_in.size(1) == Tk && R % Tq == 0 && (!causal || Tq == Tk), "masked_softmax: mask ",
              mask_in.sizes(), " does not fit scores ", scores.sizes());
    const SoftmaxGeometry G{R, Tq, Tk, static_cast<float>(scale), causal};
    const bool bf16 = scores.scalar_type() == at::kBFloat16;
    at::Tensor p32 = at::empty(scores.sizes(), scores.options().dtype(at::kFloat));
    at::Tensor out = bf16 ? at::empty_like(scores) : p32;
    at::parallel_for(0, rows, kSoftmaxGrain, [&](int64_t r0, int64_t r1) {
      if (bf16)
        softmax_bf16(G, ptr<uint16_t>(scores), ptr<float>(mask), ptr<float>(p32), ptr<uint16_t>(out), r0, r1);
      else
        softmax_f32(G, ptr<float>(scores), ptr<float>(mask), ptr<float>(p32), r0, r1);
    });
    ctx->save_for_backward({p32});
    ctx->saved_data["geometry"] = std::vector<int64_t>{R, Tq, Tk, causal ? 1 : 0};
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor p32 = ctx->get_saved_variables()[0];
    const std::vector<int64_t> g = ctx->saved_data["geometry"].toIntVector();
    const SoftmaxGeometry G{g[0], g[1], g[2], static_cast<float>(ctx->saved_data["scale"].toDouble()),
                            g[3] != 0};
    const at::Tensor grad = grads[0].contiguous();
    at::Tensor out = at::empty_like(grad);
    const int64_t rows = p32.numel() / std::max<int64_t>(G.Tk, 1);
    const bool bf16 = grad.scalar_type() == at::kBFloat16;
    at::parallel_for(0, rows, kSoftmaxGrain, [&](int64_t r0, int64_t r1) {
      if (bf16) {
        std::vector<float> tmp(static_cast<size_t>(2 * G.Tk));
        softmax_backward_bf16(G, ptr<float>(p32), ptr<uint16_t>(grad), ptr<uint16_t>(out), tmp.data(), r0,
                              r1);
      } else {
        softmax_backward_f32(G, ptr<float>(p32), ptr<float>(grad), ptr<float>(out), r0, r1);
      }
    });
    return {out, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// ---- lanes of any storage type, rounded as ATen rounds -------------------------------------

typedef uint32_t UintLanes __attribute__((vector_size(kLanes * sizeof(uint32_t))));

// Each lane rounded to the nearest bf16 (ties to even), NaN kept: c10::BFloat16's rounding.
inline __attribute__((always_inline)) Lanes round_bf16_lanes(Lanes v) {
  UintLanes u;
  std::memcpy(&u, &v, sizeof u);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  Lanes r;
  std::memcpy(&r, &u, sizeof r);
  return v != v ? splat(std::numeric_limits<float>::quiet_NaN()) : r;  // c10's 0x7FC0
}

typedef uint16_t HalfLanes __attribute__((vector_size(kLanes * sizeof(uint16_t))));

// n (<= 16) elements from p as fp32 lanes (the rest 0), and back; whole chunks of 16 as
// vector loads and stores (bf16 widened and narrowed in registers).
template <typename S>
inline __attribute__((always_inline)) Lanes load_n(const S* p, int64_t n) {
  if (n == kLanes) {
    if constexpr (std::is_same_v<S, float>) {
      return load_lanes(p);
    } else {
      HalfLanes h;
      std::memcpy(&h, p, sizeof h);
      const UintLanes u = __builtin_convertvector(h, UintLanes) << 16;
      Lanes v;
      std::memcpy(&v, &u, sizeof v);
      return v;
    }
  }
  float f[kLanes] = {};
  for (int64_t k = 0; k < n; ++k) f[k] = Num<S>::load(p[k]);
  return load_lanes(f);
}
template <typename S>
inline __attribute__((always_inline)) void store_n(S* p, Lanes v, int64_t n) {
  if constexpr (std::is_same_v<S, uint16_t>) {
    v = round_bf16_lanes(v);
    UintLanes u;
    std::memcpy(&u, &v, sizeof u);
    const HalfLanes h = __builtin_convertvector(u >> 16, HalfLanes);
    if (n == kLanes) {
      std::memcpy(p, &h, sizeof h);
    } else {
      for (int64_t k = 0; k < n; ++k) p[k] = h[k];
    }
  } else {
    if (n == kLanes) {
      store_lanes(p, v);
    } else {
      for (int64_t k = 0; k < n; ++k) p[k] = v[k];
    }
  }
}
// Rounded to S's precision in fp32 lanes (bf16: to bf16; fp32: as is).
template <typename S>
inline __attribute__((always_inline)) Lanes rnd(Lanes v) {
  if constexpr (std::is_same_v<S, uint16_t>) return round_bf16_lanes(v);
  return v;
}

// ---- SwiGLU: silu(gate) * up ----------------------------------------------------------------

// Row [gate (I) | up (I)] -> silu(gate) * up, rounded as at::silu then the multiply round.
template <typename S>
inline __attribute__((always_inline)) void swiglu_rows(const S* in, S* out, int64_t I, int64_t r0,
                                                       int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const S* g = in + r * 2 * I;
    const S* u = g + I;
    S* o = out + r * I;
    for (int64_t j = 0; j < I; j += kLanes) {
      const int64_t n = std::min(kLanes, I - j);
      const Lanes x = load_n(g + j, n);
      const Lanes s = rnd<S>(x / (1.0f + exp_lanes(-x)));  // ATen's silu: x / (1 + exp(-x))
      store_n(o + j, s * load_n(u + j, n), n);
    }
  }
}

// The gradient of a row of [gate | up] from that of silu(gate) * up: up's is dy * silu(gate),
// gate's is silu's backward (ATen's dy * sig * (1 + x (1 - sig))) of dy * up.
template <typename S>
inline __attribute__((always_inline)) void swiglu_backward_rows(const S* in, const S* dy, S* dx, int64_t I,
                                                                int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const S* g = in + r * 2 * I;
    const S* u = g + I;
    const S* d = dy + r * I;
    S* dg = dx + r * 2 * I;
    S* du = dg + I;
    for (int64_t j = 0; j < I; j += kLanes) {
      const int64_t n = std::min(kLanes, I - j);
      const Lanes x = load_n(g + j, n), up = load_n(u + j, n), grad = load_n(d + j, n);
      const Lanes e = exp_lanes(-x);
      const Lanes s = rnd<S>(x / (1.0f + e));
      const Lanes sig = 1.0f / (1.0f + e);
      const Lanes gs = rnd<S>(grad * up);
      store_n(du + j, grad * s, n);
      store_n(dg + j, gs * sig * (1.0f + x * (1.0f - sig)), n);
    }
  }
}

// ---- RMSNorm ----------------------------------------------------------------------------------

// Rows of x [C]: r = 1 / sqrt(mean(x^2) + eps) (kept per row), y = w * round(x * r).
template <typename S>
inline __attribute__((always_inline)) void rms_norm_rows(const S* x, const S* w, S* y, float* rstd, int64_t C,
                                                         float eps, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const S* xr = x + r * C;
    S* yr = y + r * C;
    Lanes acc = splat(0.0f);
    for (int64_t j = 0; j < C; j += kLanes) {
      const Lanes v = load_n(xr + j, std::min(kLanes, C - j));
      acc += v * v;
    }
    float ss = 0;
    for (int64_t k = 0; k < kLanes; ++k) ss += acc[k];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
    rstd[r] = inv;
    for (int64_t j = 0; j < C; j += kLanes) {
      const int64_t n = std::min(kLanes, C - j);
      store_n(yr + j, load_n(w + j, n) * rnd<S>(load_n(xr + j, n) * inv), n);
    }
  }
}

// Its gradient in x (dn = round(dy * w); dx = r dn - x r^3 / C * sum(dn x)), and the products
// dy * round(x r) whose sum over rows is w's gradient.
template <typename S>
inline __attribute__((always_inline)) void rms_norm_backward_rows(const S* x, const S* w, const S* dy,
                                                                  const float* rstd, S* dx, S* dw_rows,
                                                                  int64_t C, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const S* xr = x + r * C;
    const S* dr = dy + r * C;
    const float inv = rstd[r];
    Lanes acc = splat(0.0f);
    for (int64_t j = 0; j < C; j += kLanes) {
      const int64_t n = std::min(kLanes, C - j);
      const Lanes xv = load_n(xr + j, n), d = load_n(dr + j, n);
      acc += rnd<S>(d * load_n(w + j, n)) * xv;
      if (dw_rows) store_n(dw_rows + r * C + j, d * rnd<S>(xv * inv), n);
    }
    float dot = 0;
    for (int64_t k = 0; k < kLanes; ++k) dot += acc[k];
    const float coef = dot * inv * inv * inv / static_cast<float>(C);
    for (int64_t j = 0; j < C; j += kLanes) {
      const int64_t n = std::min(kLanes, C - j);
      const Lanes dn = rnd<S>(load_n(dr + j, n) * load_n(w + j, n));
      store_n(dx + r * C + j, dn * inv - load_n(xr + j, n) * coef, n);
    }
  }
}

KTO_CLONES void swiglu_f32(const float* in, float* out, int64_t I, int64_t r0, int64_t r1) {
  swiglu_rows(in, out, I, r0, r1);
}
KTO_CLONES void swiglu_bf16(const uint16_t* in, uint16_t* out, int64_t I, int64_t r0, int64_t r1) {
  swiglu_rows(in, out, I, r0, r1);
}
KTO_CLONES void swiglu_backward_f32(const float* in, const float* dy, float* dx, int64_t I, int64_t r0,
                                    int64_t r1) {
  swiglu_backward_rows(in, dy, dx, I, r0, r1);
}
KTO_CLONES void swiglu_backward_bf16(const uint16_t* in, const uint16_t* dy, uint16_t* dx, int64_t I,
                                     int64_t r0, int64_t r1) {
  swiglu_backward_rows(in, dy, dx, I, r0, r1);
}
KTO_CLONES void rms_norm_f32(const float* x, const float* w, float* y, float* rstd, int64_t C, float eps,
                             int64_t r0, int64_t r1) {
  rms_norm_rows(x, w, y, rstd, C, eps, r0, r1);
}
KTO_CLONES void rms_norm_bf16(const uint16_t* x, const uint16_t* w, uint16_t* y, float* rstd, int64_t C,
                              float eps, int64_t r0, int64_t r1) {
  rms_norm_rows(x, w, y, rstd, C, eps, r0, r1);
}
KTO_CLONES void rms_norm_backward_f32(const float* x, const float* w, const float* dy, const float* rstd,
                                      float* dx, float* dw_rows, int64_t C, int64_t r0, int64_t r1) {
  rms_norm_backward_rows(x, w, dy, rstd, dx, dw_rows, C, r0, r1);
}
KTO_CLONES void rms_norm_backward_bf16(const uint16_t* x, const uint16_t* w, const uint16_t* dy,
                                       const float* rstd, uint16_t* dx, uint16_t* dw_rows, int64_t C,
                                       int64_t r0, int64_t r1) {
  rms_norm_backward_rows(x, w, dy, rstd, dx, dw_rows, C, r0, r1);
}

bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }

class SwiGlu : public torch::autograd::Function<SwiGlu> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& in_) {
    const at::Tensor in = in_.contiguous();
    const int64_t I = in.size(-1) / 2, rows = in.numel() / std::max<int64_t>(2 * I, 1);
    std::vector<int64_t> shape = in.sizes().vec();
    shape.back() = I;
    at::Tensor out = at::empty(shape, in.options());
    at::parallel_for(0, rows, kRowGrain, [&](int64_t r0, int64_t r1) {
      if (is_bf16(in))
        swiglu_bf16(ptr<uint16_t>(in), ptr<uint16_t>(out), I, r0, r1);
      else
        swiglu_f32(ptr<float>(in), ptr<float>(out), I, r0, r1);
    });
    ctx->save_for_backward({in});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor in = ctx->get_saved_variables()[0];
    const at::Tensor dy = grads[0].contiguous();
    const int64_t I = in.size(-1) / 2, rows = in.numel() / std::max<int64_t>(2 * I, 1);
    at::Tensor dx = at::empty_like(in);
    at::parallel_for(0, rows, kRowGrain, [&](int64_t r0, int64_t r1) {
      if (is_bf16(in))
        swiglu_backward_bf16(ptr<uint16_t>(in), ptr<uint16_t>(dy), ptr<uint16_t>(dx), I, r0, r1);
      else
        swiglu_backward_f32(ptr<float>(in), ptr<float>(dy), ptr<float>(dx), I, r0, r1);
    });
    return {dx};
  }
};

class RmsNorm : public torch::autograd::Function<RmsNorm> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_, const at::Tensor& w_, double eps) {
    const at::Tensor x = x_.contiguous(), w = w_.contiguous();
    const int64_t C = x.size(-1), rows = x.numel() / std::max<int64_t>(C, 1);
    at::Tensor y = at::empty_like(x);
    at::Tensor rstd = at::empty({rows}, x.options().dtype(at::kFloat));
    at::parallel_for(0, rows, kRowGrain, [&](int64_t r0, int64_t r1) {
      if (is_bf16(x))
        rms_norm_bf16(ptr<uint16_t>(x), ptr<uint16_t>(w), ptr<uint16_t>(y), ptr<float>(rstd), C,
                      static_cast<float>(eps), r0, r1);
      else
        rms_norm_f32(ptr<float>(x), ptr<float>(w), ptr<float>(y), ptr<float>(rstd), C,
                     static_cast<float>(eps), r0, r1);
    });
    ctx->save_for_backward({x, w, rstd});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &rstd = saved[2];
    const at::Tensor dy = grads[0].contiguous();
    const int64_t C = x.size(-1), rows = x.numel() / std::max<int64_t>(C, 1);
    at::Tensor dx = at::empty_like(x);
    const bool need_w = ctx->needs_input_grad(1);
    at::Tensor dw_rows = need_w ? at::empty({rows, C}, x.options()) : at::Tensor();
    at::parallel_for(0, rows, kRowGrain, [&](int64_t r0, int64_t r1) {
      if (is_bf16(x))
        rms_norm_backward_bf16(ptr<uint16_t>(x), ptr<uint16_t>(w), ptr<uint16_t>(dy), ptr<float>(rstd),
                               ptr<uint16_t>(dx), ptr<uint16_t>(dw_rows), C, r0, r1);
      else
        rms_norm_backward_f32(ptr<float>(x), ptr<float>(w), ptr<float>(dy), ptr<float>(rstd), ptr<float>(dx),
                              ptr<float>(dw_rows), C, r0, r1);
    });
    // w's gradient: the products summed over rows, as autograd sums a broadcast operand's.
    return {dx, need_w ? dw_rows.sum(0) : at::Tensor(), at::Tensor()};
  }
};

std::atomic<int> g_enabled{-1};  // -1: not read from the environment yet

// (Through an always-inline template, as every kernel here: clang refuses a 64-byte vector
// argument in a call made directly from the clones that lack AVX-512.)
template <typename S>
inline __attribute__((always_inline)) void exp_values(const S* in, S* out, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t m = std::min(kLanes, n - i);
    store_n(out + i, exp_lanes(load_n(in + i, m)), m);
  }
}

KTO_CLONES void exp_f32(const float* in, float* out, int64_t n) { exp_values(in, out, n); }
}  // namespace

bool enabled() {
  int e = g_enabled.load();
  if (e < 0) {
    const char* v = std::getenv("KTO_FUSED_CPU");
    e = v != nullptr && std::string(v) == "0" ? 0 : 1;
    g_enabled.store(e);
  }
  return e == 1;
}

void set_enabled(bool on) { g_enabled.store(on ? 1 : 0); }

at::Tensor exp_as_fused(const at::Tensor& x) {
  KTO_CHECK(x.scalar_type() == at::kFloat && x.device().is_cpu(), "exp_as_fused: fp32 CPU tensors only");
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in);
  exp_f32(in.data_ptr<float>(), out.data_ptr<float>(), in.numel());
  return out;
}

// What each kernel takes, enabled or not: the entry points run whenever called (tests call them
// directly); enabled() steers only the *_supported choice blocks.cpp makes.
namespace {
bool masked_softmax_ok(const at::Tensor& scores) {
  const at::ScalarType t = scores.scalar_type();
  return scores.device().is_cpu() && scores.dim() >= 2 && (t == at::kFloat || t == at::kBFloat16);
}

bool elementwise_ok(const at::Tensor& x) {
  const at::ScalarType t = x.scalar_type();
  return x.device().is_cpu() && x.dim() >= 1 && (t == at::kFloat || t == at::kBFloat16);
}

bool rope_heads_ok(const at::Tensor& qkv) {
  const at::ScalarType t = qkv.scalar_type();
  return qkv.device().is_cpu() && qkv.dim() == 3 &&
         (t == at::kFloat || t == at::kDouble || t == at::kBFloat16);
}
}  // namespace

bool masked_softmax_supported(const at::Tensor& scores) { return enabled() && masked_softmax_ok(scores); }
bool elementwise_supported(const at::Tensor& x) { return enabled() && elementwise_ok(x); }
bool rope_heads_supported(const at::Tensor& qkv) { return enabled() && rope_heads_ok(qkv); }

at::Tensor masked_softmax(const at::Tensor& scores, double scale, const at::Tensor& mask, bool causal) {
  KTO_CHECK(masked_softmax_ok(scores), "masked_softmax: unsupported input ", scores.scalar_type(), " on ",
            scores.device());
  return MaskedSoftmax::apply(scores, scale, mask, causal);
}

at::Tensor swiglu(const at::Tensor& gate_up) {
  KTO_CHECK(elementwise_ok(gate_up) && gate_up.size(-1) % 2 == 0, "swiglu: unsupported input ",
            gate_up.scalar_type(), " ", gate_up.sizes(), " on ", gate_up.device());
  return SwiGlu::apply(gate_up);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  KTO_CHECK(elementwise_ok(x) && weight.scalar_type() == x.scalar_type() && weight.dim() == 1 &&
                weight.size(0) == x.size(-1),
            "rms_norm: unsupported input ", x.scalar_type(), " ", x.sizes(), " with weight ", weight.sizes());
  return RmsNorm::apply(x, weight, eps);
}

std::array<at::Tensor, 3> rope_heads(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                                     int64_t heads, int64_t kv_heads, int64_t head_dim, QkvLayout layout) {
  KTO_CHECK(rope_heads_ok(qkv), "rope_heads: unsupported input ", qkv.scalar_type(), " on ", qkv.device());
  KTO_CHECK(cos.scalar_type() == qkv.scalar_type() && sin.scalar_type() == qkv.scalar_type(),
            "rope_heads: tables in ", cos.scalar_type(), ", activations in ", qkv.scalar_type());
  const variable_list out =
      RopeHeads::apply(qkv, cos, sin, heads, kv_heads, head_dim, static_cast<int64_t>(layout));
  return {out[0], out[1], out[2]};
}

}  // namespace kto::model::fused
