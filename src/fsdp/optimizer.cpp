#include "kto/fsdp/optimizer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "kto/util/check.h"

namespace kto::fsdp {
namespace {

// CPU slices take one pass per step through loops of our own: the ATen formulation below (the
// one devices use) makes ~8 passes over the optimizer state and, for the norm, an fp64 copy of
// every gradient; on CPU both are memory-bound, so passes are time.
constexpr int64_t kChunk = int64_t{1} << 15;

// sum(g^2) in fp64, in fixed chunks summed in order: the same bits for any thread count.
template <typename T>
double squared_sum_cpu(const at::Tensor& grad) {
  const T* g = grad.data_ptr<T>();
  const int64_t n = grad.numel(), chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
      double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = begin;
      for (; i + 8 <= end; i += 8) {
        for (int k = 0; k < 8; ++k) {
          const double x = static_cast<double>(g[i + k]);
          lane[k] += x * x;
        }
      }
      for (; i < end; ++i) lane[0] += static_cast<double>(g[i]) * static_cast<double>(g[i]);
      partial[static_cast<size_t>(c)] =
          ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    }
  });
  double total = 0;
  for (double x : partial) total += x;
  return total;
}

template <typename T>
struct AdamwConstants {
  T grad_scale, decay_factor, beta1, one_minus_beta1, beta2, one_minus_beta2, sqrt_bc2, eps, step_size;
};

// Elements [b, e) of one slice: clip scale, decoupled decay (when `Decay`), moments, update.
// Element-wise with no reordering, so every vector width computes the bits of the scalar loop:
// this file is built with -fno-math-errno (std::sqrt becomes a vector square root, correctly
// rounded as the scalar one) and -ffp-contract=off (no FMA where ATen's kernels round twice);
// see src/CMakeLists.txt.
template <typename T, bool Decay>
inline __attribute__((always_inline)) void adamw_elements(T* __restrict p, const T* __restrict g,
                                                          T* __restrict m, T* __restrict v, int64_t b,
                                                          int64_t e, const AdamwConstants<T>& c) {
  const T grad_scale = c.grad_scale, decay_factor = c.decay_factor, beta1 = c.beta1,
          one_minus_beta1 = c.one_minus_beta1, beta2 = c.beta2, one_minus_beta2 = c.one_minus_beta2,
          sqrt_bc2 = c.sqrt_bc2, eps = c.eps, step_size = c.step_size;
  for (int64_t i = b; i < e; ++i) {
    const T gi = g[i] * grad_scale;
    const T pi = Decay ? p[i] * decay_factor : p[i];
    const T mi = m[i] * beta1 + gi * one_minus_beta1;
    const T vi = v[i] * beta2 + gi * gi * one_minus_beta2;
    const T denom = std::sqrt(vi) / sqrt_bc2 + eps;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + step_size * (mi / denom);
  }
}

// Compiled for AVX-512, AVX2 and baseline x86-64, chosen at load time by the CPU: the scalar
// loop (square root and two divisions per element) ran at ~1/3 of memory bandwidth.
#if defined(__x86_64__)
#define KTO_OPT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KTO_OPT_CLONES
#endif

template <typename T>
inline __attribute__((always_inline)) void adamw_rows_of(T* p, const T* g, T* m, T* v, int64_t b, int64_t e,
                                                         const AdamwConstants<T>& c, bool decay) {
  if (decay) {
    adamw_elements<T, true>(p, g, m, v, b, e, c);
  } else {
    adamw_elements<T, false>(p, g, m, v, b, e, c);
  }
}

// One overload per type: clang multiversions no function templates.
KTO_OPT_CLONES void adamw_rows(float* p, const float* g, float* m, float* v, int64_t b, int64_t e,
                               const AdamwConstants<float>& c, bool decay) {
  adamw_rows_of(p, g, m, v, b, e, c, decay);
}
KTO_OPT_CLONES void adamw_rows(double* p, const double* g, double* m, double* v, int64_t b, int64_t e,
                               const AdamwConstants<double>& c, bool decay) {
  adamw_rows_of(p, g, m, v, b, e, c, decay);
}

template <typename T>
void adamw_range_cpu(T* p, const T* g, T* m, T* v, int64_t begin, int64_t end, const AdamwConstants<T>& c,
                     bool decay) {
  at::parallel_for(begin, end, kChunk, [&](int64_t b, int64_t e) { adamw_rows(p, g, m, v, b, e, c, decay); });
}

template <typename T>
void adamw_cpu(at::Tensor& p, const at::Tensor& g, at::Tensor& m, at::Tensor& v,
               const std::vector<Segment>& decay, const AdamwConstants<T>& c) {
  T* pp = p.data_ptr<T>();
  const T* gp = g.data_ptr<T>();
  T* mp = m.data_ptr<T>();
  T* vp = v.data_ptr<T>();
  int64_t at_elem = 0;
  for (const Segment& s : decay) {  // in slice order, disjoint
    adamw_range_cpu(pp, gp, mp, vp, at_elem, s.begin, c, false);
    adamw_range_cpu(pp, gp, mp, vp, s.begin, s.begin + s.length, c, c.decay_factor != T(1));
    at_elem = s.begin + s.length;
  }
  adamw_range_cpu(pp, gp, mp, vp, at_elem, p.numel(), c, false);
}

bool fused_cpu(const at::Tensor& p) {
  return p.device().is_cpu() && p.is_contiguous() && p.grad().is_contiguous() &&
         p.grad().scalar_type() == p.scalar_type();
}

}  // namespace

ShardedOptimizer::ShardedOptimizer(std::vector<at::Tensor> params, std::vector<std::vector<Segment>> decay,
                                   OptimizerOptions options, comm::Communicator* comm)
    : params_(std::move(params)), decay_(std::move(decay)), options_(options), comm_(comm) {
  KTO_CHECK(decay_.size() == params_.size(), "one list of decay segments per parameter");
  for (const at::Tensor& p : params_) {
    KTO_CHECK(p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble,
              "optimizer parameters must be fp32/fp64 masters");
    std::vector<at::Tensor> s;
    if (options_.name == OptimizerName::adamw)
      s.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous).detach());
    s.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous).detach());
    state_.push_back(std::move(s));
  }
}

double ShardedOptimizer::grad_norm() const {
  // On the device, in fp64: each slice's squared sum, then one reduction over the slices (a
  // running sum, in slice order); no host sync until the single copy at the end.
  // On CPU the same in one pass per slice.
  std::vector<at::Tensor> squares;
  bool any = false;
  double cpu_sum = 0;
  for (const at::Tensor& p : params_) {
    if (!p.grad().defined()) continue;
    any = true;
    if (fused_cpu(p)) {
      cpu_sum += p.scalar_type() == at::kDouble ? squared_sum_cpu<double>(p.grad())
                                                : squared_sum_cpu<float>(p.grad());
    } else {
      squares.push_back(p.grad().to(at::kDouble).pow(2).sum());
    }
  }
  if (!any) return 0.0;
  at::Tensor sq = squares.empty() ? at::full({1}, cpu_sum, at::kDouble)
                                  : (at::stack(squares).cumsum(0)[-1] + cpu_sum).reshape({1}).contiguous();
  // Each rank holds a disjoint slice: the global squared norm is the sum over ranks.
  if (comm_ != nullptr) comm_->all_reduce(sq, comm::ReduceOp::sum)->wait();
  return std::sqrt(sq.item<double>());
}

void ShardedOptimizer::step(double lr, double grad_norm) {
  KTO_CHECK(std::isfinite(grad_norm), "a non-finite gradient norm must skip the step, not reach it");
  double scale = 1.0;
  if (options_.max_grad_norm > 0 && grad_norm > options_.max_grad_norm) {
    scale = options_.max_grad_norm / (grad_norm + 1e-6);  // torch.nn.utils.clip_grad_norm_
  }
  ++steps_;
  at::NoGradGuard no_grad;
  const double wd = options_.weight_decay;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor p = params_[i];
    if (!p.grad().defined()) continue;
    at::Tensor g = p.grad();
    if (options_.name == OptimizerName::adamw && fused_cpu(p)) {
      const double bc1 = 1.0 - std::pow(options_.beta1, static_cast<double>(steps_));
      const double bc2 = 1.0 - std::pow(options_.beta2, static_cast<double>(steps_));
      const auto run = [&](auto zero) {
        using T = decltype(zero);
        const AdamwConstants<T> c{static_cast<T>(scale),          static_cast<T>(1.0 - lr * wd),
                                  static_cast<T>(options_.beta1), static_cast<T>(1.0 - options_.beta1),
                                  static_cast<T>(options_.beta2), static_cast<T>(1.0 - options_.beta2),
                                  static_cast<T>(std::sqrt(bc2)), static_cast<T>(options_.eps),
                                  static_cast<T>(-lr / bc1)};
        adamw_cpu<T>(p, g, state_[i][0], state_[i][1], decay_[i], c);
      };
      if (p.scalar_type() == at::kDouble) {
        run(0.0);
      } else {
        run(0.0f);
      }
      continue;
    }
    if (scale != 1.0) g = g * scale;
    if (options_.name == OptimizerName::adamw) {
      at::Tensor& m = state_[i][0];
      at::Tensor& v = state_[i][1];
      if (wd != 0) {
        for (const Segment& s : decay_[i]) p.narrow(0, s.begin, s.length).mul_(1.0 - lr * wd);  // decoupled
      }
      m.mul_(options_.beta1).add_(g, 1.0 - options_.beta1);
      v.mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
      const double bc1 = 1.0 - std::pow(options_.beta1, static_cast<double>(steps_));
      const double bc2 = 1.0 - std::pow(options_.beta2, static_cast<double>(steps_));
      const at::Tensor denom = (v.sqrt() / std::sqrt(bc2)).add_(options_.eps);
      p.addcdiv_(m, denom, -lr / bc1);
    } else {
      at::Tensor& v = state_[i][0];
      if (wd != 0) {
        g = g.clone();
        for (const Segment& s : decay_[i])
          g.narrow(0, s.begin, s.length).add_(p.narrow(0, s.begin, s.length), wd);
      }
      v.mul_(options_.alpha).addcmul_(g, g, 1.0 - options_.alpha);
      p.addcdiv_(g, v.sqrt().add_(options_.eps), -lr);
    }
  }
}

void ShardedOptimizer::zero_grad() {
  for (at::Tensor& p : params_) {
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
}

int64_t ShardedOptimizer::state_bytes() const {
  int64_t bytes = 0;
  for (const auto& s : state_) {
    for (const at::Tensor& t : s) bytes += t.numel() * t.element_size();
  }
  return bytes;
}

}  // namespace kto::fsdp
