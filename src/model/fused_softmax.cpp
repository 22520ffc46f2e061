// masked_softmax (kto/model/fused_cpu.h): scale, mask and fp32 softmax of attention scores in
// one pass, the keys past each query skipped under a causal mask; and its exp, for tests.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fused_lanes.h"
#include "kto/model/fused_cpu.h"
#include "kto/util/check.h"

namespace kto::model::fused {
namespace {

using namespace detail;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// One row in place: v = x*scale (+ mask), then softmax over its first `n` entries.
template <int W>
KTO_INLINE void softmax_row(float* __restrict x, const float* __restrict mask, int64_t n, float scale) {
  const int64_t full = n / kLanes * kLanes;
  Lanes mx = splat(-INFINITY);
  for (int64_t j = 0; j < full; j += kLanes) {
    Lanes v = load_lanes(x + j) * scale;
    if (mask) v += load_lanes(mask + j);
    store_lanes<W>(x + j, v);
    mx = max_lanes<W>(v, mx);
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
    const Lanes e = exp_lanes<W>(load_lanes(x + j) - m);
    store_lanes<W>(x + j, e);
    sum += e;
  }
  if (full < n) {
    float tail[kLanes];
    for (int64_t k = 0; k < kLanes; ++k) tail[k] = full + k < n ? x[full + k] - m : -INFINITY;
    const Lanes e = exp_lanes<W>(load_lanes(tail));
    for (int64_t j = full; j < n; ++j) x[j] = e[j - full];
    sum += e;
  }
  float total = 0;
  for (int64_t k = 0; k < kLanes; ++k) total += sum[k];
  const float inv = 1.0f / total;
  for (int64_t j = 0; j < n; ++j) x[j] *= inv;
}

// dx = scale * p * (g - sum(g * p)) over the first n entries.
KTO_INLINE void softmax_backward_row(const float* __restrict p, const float* __restrict g,
                                     float* __restrict dx, int64_t n, float scale) {
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
template <int W, typename S>
KTO_INLINE void softmax_rows(const SoftmaxGeometry& G, const S* scores, const float* mask, float* p32,
                             uint16_t* out16, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = p32 + r * G.Tk;
    const S* in = scores + r * G.Tk;
    const int64_t n = G.keys(r);
    if constexpr (std::is_same_v<S, float>) {
      if (row != in) std::memcpy(row, in, sizeof(float) * n);
    } else {
      for (int64_t j = 0; j < n; ++j) row[j] = Num<uint16_t>::load(in[j]);
    }
    softmax_row<W>(row, G.causal ? nullptr : mask + G.query(r) * G.Tk, n, G.scale);
    for (int64_t j = n; j < G.Tk; ++j) row[j] = 0.0f;
    if (out16)
      for (int64_t j = 0; j < G.Tk; ++j) out16[r * G.Tk + j] = Num<uint16_t>::store(row[j]);
  }
}

// Rows [r0, r1) of the gradient: from dprobs (fp32 or bf16 bits) and the fp32 probabilities.
template <int W, typename S>
KTO_INLINE void softmax_backward_rows(const SoftmaxGeometry& G, const float* p32, const S* grad, S* out,
                                      float* tmp, int64_t r0, int64_t r1) {
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

KTO_PER_ISA(void softmax_f32(const SoftmaxGeometry& G, const float* s, const float* mask, float* p32,
                             int64_t r0, int64_t r1),
            softmax_rows<W, float>(G, s, mask, p32, nullptr, r0, r1))
KTO_PER_ISA(void softmax_bf16(const SoftmaxGeometry& G, const uint16_t* s, const float* mask, float* p32,
                              uint16_t* out, int64_t r0, int64_t r1),
            softmax_rows<W, uint16_t>(G, s, mask, p32, out, r0, r1))
KTO_PER_ISA(void softmax_backward_f32(const SoftmaxGeometry& G, const float* p32, const float* g, float* out,
                                      int64_t r0, int64_t r1),
            softmax_backward_rows<W, float>(G, p32, g, out, nullptr, r0, r1))
KTO_PER_ISA(void softmax_backward_bf16(const SoftmaxGeometry& G, const float* p32, const uint16_t* g,
                                       uint16_t* out, float* tmp, int64_t r0, int64_t r1),
            softmax_backward_rows<W, uint16_t>(G, p32, g, out, tmp, r0, r1))

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

// (Through an always-inline template, as every kernel here: clang refuses a 64-byte vector
// argument in a call made directly from the clones that lack AVX-512.)
template <int W, typename S>
KTO_INLINE void exp_values(const S* in, S* out, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t m = std::min(kLanes, n - i);
    store_n<W>(out + i, exp_lanes<W>(load_n(in + i, m)), m);
  }
}

KTO_PER_ISA(void exp_f32(const float* in, float* out, int64_t n), exp_values<W>(in, out, n))

bool masked_softmax_ok(const at::Tensor& scores) {
  const at::ScalarType t = scores.scalar_type();
  return scores.device().is_cpu() && scores.dim() >= 2 && (t == at::kFloat || t == at::kBFloat16);
}
}  // namespace

bool masked_softmax_supported(const at::Tensor& scores) { return enabled() && masked_softmax_ok(scores); }

at::Tensor masked_softmax(const at::Tensor& scores, double scale, const at::Tensor& mask, bool causal) {
  KTO_CHECK(masked_softmax_ok(scores), "masked_softmax: unsupported input ", scores.scalar_type(), " on ",
            scores.device());
  return MaskedSoftmax::apply(scores, scale, mask, causal);
}

bool attention_no_grad_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const auto fits = [](const at::Tensor& t) {
    return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 4;
  };
  if (!enabled() || !fits(q) || !fits(k) || !fits(v)) return false;
  // Both products (R x D by D x Tk, R x Tk by Tk x D) make R * D * Tk multiply-adds.
  return q.size(2) * q.size(3) * k.size(2) >= 400;
}

at::Tensor attention_no_grad(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                             const at::Tensor& mask_in, bool causal) {
  KTO_CHECK(!at::GradMode::is_enabled(), "attention_no_grad: grad mode is on");
  KTO_CHECK(attention_no_grad_supported(q, k, v), "attention_no_grad: unsupported operands q ", q.sizes(),
            " k ", k.sizes(), " v ", v.sizes());
  const int64_t B = q.size(0), G = q.size(1), R = q.size(2), D = q.size(3), Tk = k.size(2);
  KTO_CHECK(k.size(0) == B && k.size(1) == G && k.size(3) == D && v.size(0) == B && v.size(1) == G &&
                v.size(2) == Tk,
            "attention_no_grad: q ", q.sizes(), ", k ", k.sizes(), " and v ", v.sizes(), " do not fit");
  KTO_CHECK(mask_in.defined() && mask_in.dim() == 2, "attention_no_grad: the mask must be [Tq, Tk]");
  const int64_t Tq = mask_in.size(0);
  KTO_CHECK(mask_in.size(1) == Tk && R % Tq == 0 && (!causal || Tq == Tk), "attention_no_grad: mask ",
            mask_in.sizes(), " does not fit scores [", R, ", ", Tk, "]");
  const at::Tensor mask = causal ? at::Tensor() : mask_in.to(at::kFloat).contiguous();
  const SoftmaxGeometry geometry{R, Tq, Tk, static_cast<float>(scale), causal};
  at::Tensor out = at::empty({B, G, R, v.size(3)}, q.options());
  at::Tensor scores = at::empty({R, Tk}, q.options());
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t g = 0; g < G; ++g) {
      at::mm_out(scores, q.select(0, b).select(0, g), k.select(0, b).select(0, g).t());
      at::parallel_for(0, R, kSoftmaxGrain, [&](int64_t r0, int64_t r1) {
        softmax_f32(geometry, ptr<float>(scores), ptr<float>(mask), ptr<float>(scores), r0, r1);
      });
      at::Tensor o = out.select(0, b).select(0, g);
      at::mm_out(o, scores, v.select(0, b).select(0, g));
    }
  }
  return out;
}

at::Tensor exp_as_fused(const at::Tensor& x) {
  KTO_CHECK(x.scalar_type() == at::kFloat && x.device().is_cpu(), "exp_as_fused: fp32 CPU tensors only");
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in);
  exp_f32(in.data_ptr<float>(), out.data_ptr<float>(), in.numel());
  return out;
}

}  // namespace kto::model::fused
