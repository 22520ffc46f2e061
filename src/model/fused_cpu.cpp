// The switch of the fused CPU kernels (kto/model/fused_cpu.h), and swiglu and rms_norm; rope_heads
// is in fused_rope.cpp, masked_softmax in fused_softmax.cpp, their building blocks in fused_lanes.h.
#include "kto/model/fused_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "fused_lanes.h"
#include "kto/util/check.h"

namespace kto::model::fused {
namespace {

using namespace detail;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::atomic<int> g_enabled{-1};  // -1: not read from the environment yet

// ---- SwiGLU: silu(gate) * up ----------------------------------------------------------------

// Row [gate (I) | up (I)] -> silu(gate) * up, rounded as at::silu then the multiply round.
template <int W, typename S>
KTO_INLINE void swiglu_rows(const S* in, S* out, int64_t I, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const S* g = in + r * 2 * I;
    const S* u = g + I;
    S* o = out + r * I;
    for (int64_t j = 0; j < I; j += kLanes) {
      const int64_t n = std::min(kLanes, I - j);
      const Lanes x = load_n(g + j, n);
      const Lanes s = rnd<W, S>(x / (1.0f + exp_lanes<W>(-x)));  // ATen's silu: x / (1 + exp(-x))
      store_n<W>(o + j, s * load_n(u + j, n), n);
    }
  }
}

// The gradient of a row of [gate | up] from that of silu(gate) * up: up's is dy * silu(gate),
// gate's is silu's backward (ATen's dy * sig * (1 + x (1 - sig))) of dy * up.
template <int W, typename S>
KTO_INLINE void swiglu_backward_rows(const S* in, const S* dy, S* dx, int64_t I, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const S* g = in + r * 2 * I;
    const S* u = g + I;
    const S* d = dy + r * I;
    S* dg = dx + r * 2 * I;
    S* du = dg + I;
    for (int64_t j = 0; j < I; j += kLanes) {
      const int64_t n = std::min(kLanes, I - j);
      const Lanes x = load_n(g + j, n), up = load_n(u + j, n), grad = load_n(d + j, n);
      const Lanes e = exp_lanes<W>(-x);
      const Lanes s = rnd<W, S>(x / (1.0f + e));
      const Lanes sig = 1.0f / (1.0f + e);
      const Lanes gs = rnd<W, S>(grad * up);
      store_n<W>(du + j, grad * s, n);
      store_n<W>(dg + j, gs * sig * (1.0f + x * (1.0f - sig)), n);
    }
  }
}

// ---- RMSNorm ----------------------------------------------------------------------------------

// Rows of x [C]: r = 1 / sqrt(mean(x^2) + eps) (kept per row), y = w * round(x * r).
template <int W, typename S>
KTO_INLINE void rms_norm_rows(const S* x, const S* w, S* y, float* rstd, int64_t C, float eps, int64_t r0,
                              int64_t r1) {
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
      store_n<W>(yr + j, load_n(w + j, n) * rnd<W, S>(load_n(xr + j, n) * inv), n);
    }
  }
}

// Its gradient in x (dn = round(dy * w); dx = r dn - x r^3 / C * sum(dn x)), and the products
// dy * round(x r) whose sum over rows is w's gradient.
template <int W, typename S>
KTO_INLINE void rms_norm_backward_rows(const S* x, const S* w, const S* dy, const float* rstd, S* dx,
                                       S* dw_rows, int64_t C, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const S* xr = x + r * C;
    const S* dr = dy + r * C;
    const float inv = rstd[r];
    Lanes acc = splat(0.0f);
    for (int64_t j = 0; j < C; j += kLanes) {
      const int64_t n = std::min(kLanes, C - j);
      const Lanes xv = load_n(xr + j, n), d = load_n(dr + j, n);
      acc += rnd<W, S>(d * load_n(w + j, n)) * xv;
      if (dw_rows) store_n<W>(dw_rows + r * C + j, d * rnd<W, S>(xv * inv), n);
    }
    float dot = 0;
    for (int64_t k = 0; k < kLanes; ++k) dot += acc[k];
    const float coef = dot * inv * inv * inv / static_cast<float>(C);
    for (int64_t j = 0; j < C; j += kLanes) {
      const int64_t n = std::min(kLanes, C - j);
      const Lanes dn = rnd<W, S>(load_n(dr + j, n) * load_n(w + j, n));
      store_n<W>(dx + r * C + j, dn * inv - load_n(xr + j, n) * coef, n);
    }
  }
}

KTO_PER_ISA(void swiglu_kernel(const float* in, float* out, int64_t I, int64_t r0, int64_t r1),
            swiglu_rows<W>(in, out, I, r0, r1))
KTO_PER_ISA(void swiglu_kernel(const uint16_t* in, uint16_t* out, int64_t I, int64_t r0, int64_t r1),
            swiglu_rows<W>(in, out, I, r0, r1))
KTO_PER_ISA(void swiglu_backward_kernel(const float* in, const float* dy, float* dx, int64_t I, int64_t r0,
                                        int64_t r1),
            swiglu_backward_rows<W>(in, dy, dx, I, r0, r1))
KTO_PER_ISA(void swiglu_backward_kernel(const uint16_t* in, const uint16_t* dy, uint16_t* dx, int64_t I,
                                        int64_t r0, int64_t r1),
            swiglu_backward_rows<W>(in, dy, dx, I, r0, r1))
KTO_PER_ISA(void rms_norm_kernel(const float* x, const float* w, float* y, float* rstd, int64_t C, float eps,
                                 int64_t r0, int64_t r1),
            rms_norm_rows<W>(x, w, y, rstd, C, eps, r0, r1))
KTO_PER_ISA(void rms_norm_kernel(const uint16_t* x, const uint16_t* w, uint16_t* y, float* rstd, int64_t C,
                                 float eps, int64_t r0, int64_t r1),
            rms_norm_rows<W>(x, w, y, rstd, C, eps, r0, r1))
KTO_PER_ISA(void rms_norm_backward_kernel(const float* x, const float* w, const float* dy, const float* rstd,
                                          float* dx, float* dw_rows, int64_t C, int64_t r0, int64_t r1),
            rms_norm_backward_rows<W>(x, w, dy, rstd, dx, dw_rows, C, r0, r1))
KTO_PER_ISA(void rms_norm_backward_kernel(const uint16_t* x, const uint16_t* w, const uint16_t* dy,
                                          const float* rstd, uint16_t* dx, uint16_t* dw_rows, int64_t C,
                                          int64_t r0, int64_t r1),
            rms_norm_backward_rows<W>(x, w, dy, rstd, dx, dw_rows, C, r0, r1))

class SwiGlu : public torch::autograd::Function<SwiGlu> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& in_) {
    const at::Tensor in = in_.contiguous();
    const int64_t I = in.size(-1) / 2, rows = in.numel() / std::max<int64_t>(2 * I, 1);
    std::vector<int64_t> shape = in.sizes().vec();
    shape.back() = I;
    at::Tensor out = at::empty(shape, in.options());
    by_float_storage(in.scalar_type(), [&](auto zero) {
      using S = decltype(zero);
      at::parallel_for(0, rows, kRowGrain,
                       [&](int64_t r0, int64_t r1) { swiglu_kernel(ptr<S>(in), ptr<S>(out), I, r0, r1); });
    });
    ctx->save_for_backward({in});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor in = ctx->get_saved_variables()[0];
    const at::Tensor dy = grads[0].contiguous();
    const int64_t I = in.size(-1) / 2, rows = in.numel() / std::max<int64_t>(2 * I, 1);
    at::Tensor dx = at::empty_like(in);
    by_float_storage(in.scalar_type(), [&](auto zero) {
      using S = decltype(zero);
      at::parallel_for(0, rows, kRowGrain, [&](int64_t r0, int64_t r1) {
        swiglu_backward_kernel(ptr<S>(in), ptr<S>(dy), ptr<S>(dx), I, r0, r1);
      });
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
    by_float_storage(x.scalar_type(), [&](auto zero) {
      using S = decltype(zero);
      at::parallel_for(0, rows, kRowGrain, [&](int64_t r0, int64_t r1) {
        rms_norm_kernel(ptr<S>(x), ptr<S>(w), ptr<S>(y), ptr<float>(rstd), C, static_cast<float>(eps), r0,
                        r1);
      });
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
    by_float_storage(x.scalar_type(), [&](auto zero) {
      using S = decltype(zero);
      at::parallel_for(0, rows, kRowGrain, [&](int64_t r0, int64_t r1) {
        rms_norm_backward_kernel(ptr<S>(x), ptr<S>(w), ptr<S>(dy), ptr<float>(rstd), ptr<S>(dx),
                                 ptr<S>(dw_rows), C, r0, r1);
      });
    });
    // w's gradient: the products summed over rows, as autograd sums a broadcast operand's.
    return {dx, need_w ? dw_rows.sum(0) : at::Tensor(), at::Tensor()};
  }
};

bool elementwise_ok(const at::Tensor& x) {
  const at::ScalarType t = x.scalar_type();
  return x.device().is_cpu() && x.dim() >= 1 && (t == at::kFloat || t == at::kBFloat16);
}
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

bool elementwise_supported(const at::Tensor& x) { return enabled() && elementwise_ok(x); }

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

}  // namespace kto::model::fused
