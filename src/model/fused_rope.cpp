// rope_heads (kto/model/fused_cpu.h): the qkv projection's rows to rotated, head-major q and k
// and plain v, and back; the same operations in the same order as the ATen chain, so the same bits.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstring>
#include <vector>

#include "fused_lanes.h"
#include "kto/model/fused_cpu.h"
#include "kto/util/check.h"

namespace kto::model::fused {
namespace {

using namespace detail;

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

KTO_CLONES void rope_forward(const Geometry& G, const float* qkv, const float* c, const float* s, float* q,
                             float* k, float* v, int64_t r0, int64_t r1) {
  forward_rows(G, qkv, c, s, q, k, v, r0, r1);
}
KTO_CLONES void rope_forward(const Geometry& G, const double* qkv, const double* c, const double* s,
                             double* q, double* k, double* v, int64_t r0, int64_t r1) {
  forward_rows(G, qkv, c, s, q, k, v, r0, r1);
}
KTO_CLONES void rope_forward(const Geometry& G, const uint16_t* qkv, const uint16_t* c, const uint16_t* s,
                             uint16_t* q, uint16_t* k, uint16_t* v, int64_t r0, int64_t r1) {
  forward_rows(G, qkv, c, s, q, k, v, r0, r1);
}
KTO_CLONES void rope_backward(const Geometry& G, const float* gq, const float* gk, const float* gv,
                              const float* c, const float* s, float* out, int64_t r0, int64_t r1) {
  backward_rows(G, gq, gk, gv, c, s, out, r0, r1);
}
KTO_CLONES void rope_backward(const Geometry& G, const double* gq, const double* gk, const double* gv,
                              const double* c, const double* s, double* out, int64_t r0, int64_t r1) {
  backward_rows(G, gq, gk, gv, c, s, out, r0, r1);
}
KTO_CLONES void rope_backward(const Geometry& G, const uint16_t* gq, const uint16_t* gk, const uint16_t* gv,
                              const uint16_t* c, const uint16_t* s, uint16_t* out, int64_t r0, int64_t r1) {
  backward_rows(G, gq, gk, gv, c, s, out, r0, r1);
}

void run_forward(const Geometry& G, const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                 at::Tensor& q, at::Tensor& k, at::Tensor& v) {
  by_storage(qkv.scalar_type(), [&](auto zero) {
    using S = decltype(zero);
    at::parallel_for(0, G.B * G.T, kRowGrain, [&](int64_t r0, int64_t r1) {
      rope_forward(G, ptr<S>(qkv), ptr<S>(cos), ptr<S>(sin), ptr<S>(q), ptr<S>(k), ptr<S>(v), r0, r1);
    });
  });
}

void run_backward(const Geometry& G, const at::Tensor& gq, const at::Tensor& gk, const at::Tensor& gv,
                  const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out) {
  by_storage(out.scalar_type(), [&](auto zero) {
    using S = decltype(zero);
    at::parallel_for(0, G.B * G.T, kRowGrain, [&](int64_t r0, int64_t r1) {
      rope_backward(G, ptr<S>(gq), ptr<S>(gk), ptr<S>(gv), ptr<S>(cos), ptr<S>(sin), ptr<S>(out), r0, r1);
    });
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

bool rope_heads_ok(const at::Tensor& qkv) {
  const at::ScalarType t = qkv.scalar_type();
  return qkv.device().is_cpu() && qkv.dim() == 3 &&
         (t == at::kFloat || t == at::kDouble || t == at::kBFloat16);
}

}  // namespace

bool rope_heads_supported(const at::Tensor& qkv) { return enabled() && rope_heads_ok(qkv); }

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
