// The CPU AdamW loop of ShardedOptimizer (src/fsdp/optimizer.cpp): compiled as AVX-512, AVX2 and
// baseline clones, it must give every element the bits of the plain scalar update rule —
// clipping scale, decoupled decay on the decay segments only, moments, bias corrections — for
// slices that are not a multiple of any vector width and span several parallel chunks.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "kto/fsdp/optimizer.h"

namespace {

using kto::fsdp::Segment;

// The update rule one element at a time, in the order and precision of the optimizer's loop.
template <typename T>
void adamw_scalar(std::vector<T>& p, const std::vector<T>& g, std::vector<T>& m, std::vector<T>& v,
                  const std::vector<Segment>& decay, const kto::fsdp::OptimizerOptions& o, int64_t step,
                  double lr, double norm) {
  const double scale =
      (o.max_grad_norm > 0 && norm > o.max_grad_norm) ? o.max_grad_norm / (norm + 1e-6) : 1.0;
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(o.beta2, static_cast<double>(step));
  const T gs = static_cast<T>(scale), df = static_cast<T>(1.0 - lr * o.weight_decay),
          b1 = static_cast<T>(o.beta1), omb1 = static_cast<T>(1.0 - o.beta1), b2 = static_cast<T>(o.beta2),
          omb2 = static_cast<T>(1.0 - o.beta2), sbc2 = static_cast<T>(std::sqrt(bc2)),
          eps = static_cast<T>(o.eps), ss = static_cast<T>(-lr / bc1);
  std::vector<char> decayed(p.size(), 0);
  for (const Segment& s : decay) {
    for (int64_t i = s.begin; i < s.begin + s.length; ++i) decayed[static_cast<size_t>(i)] = 1;
  }
  for (size_t i = 0; i < p.size(); ++i) {
    const T gi = g[i] * gs;
    const T pi = (decayed[i] && df != T(1)) ? p[i] * df : p[i];
    const T mi = m[i] * b1 + gi * omb1;
    const T vi = v[i] * b2 + gi * gi * omb2;
    const T denom = std::sqrt(vi) / sbc2 + eps;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + ss * (mi / denom);
  }
}

template <typename T>
std::vector<T> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}

template <typename T>
void check_against_scalar(at::ScalarType dtype) {
  const int64_t n = (int64_t{1} << 16) + 37;  // two and a bit parallel chunks, odd length
  at::manual_seed(7);
  const at::Tensor p0 = at::randn({n}, at::TensorOptions().dtype(dtype));
  kto::fsdp::OptimizerOptions o;
  o.lr = 1e-3;
  o.weight_decay = 0.1;
  o.max_grad_norm = 1.0;
  const std::vector<Segment> decay{{5, 1000}, {40000, n - 40000 - 3}};
  at::Tensor p = p0.clone();  // the optimizer's handle shares this tensor
  kto::fsdp::ShardedOptimizer opt({p}, {decay}, o, nullptr);
  std::vector<T> ep = to_vector<T>(p0), em(static_cast<size_t>(n), T(0)), ev(static_cast<size_t>(n), T(0));
  for (int64_t step = 1; step <= 3; ++step) {
    // Gradients with tiny, huge and zero entries: denormal moments and a zero second moment.
    at::Tensor g = at::randn({n}, p.options()) * (step == 2 ? 1e-20 : 3.0);
    g.narrow(0, 100, 50).zero_();
    p.mutable_grad() = g;
    const double norm = opt.grad_norm();
    const double lr = o.lr * static_cast<double>(step) / 3.0;
    opt.step(lr, norm);
    adamw_scalar<T>(ep, to_vector<T>(g), em, ev, decay, o, step, lr, norm);
    const std::vector<T> gp = to_vector<T>(p), gm = to_vector<T>(opt.state()[0][0]),
                         gv = to_vector<T>(opt.state()[0][1]);
    int64_t differ = 0;
    for (size_t i = 0; i < ep.size(); ++i) differ += (gp[i] != ep[i]) + (gm[i] != em[i]) + (gv[i] != ev[i]);
    INFO("step " << step << ", norm " << norm);
#if defined(__x86_64__)
    CHECK(differ == 0);  // the clones round as this scalar loop does (no FMA on baseline x86-64)
#else
    // Elsewhere this file may contract a*b + c into an FMA where the optimizer's does not.
    for (size_t i = 0; i < ep.size(); ++i) REQUIRE(gp[i] == Approx(ep[i]).epsilon(1e-5));
#endif
    opt.zero_grad();
  }
}

}  // namespace

TEST_CASE("the CPU AdamW loop gives every element the bits of the scalar update rule", "[optimizer]") {
  SECTION("fp32") { check_against_scalar<float>(at::kFloat); }
  SECTION("fp64") { check_against_scalar<double>(at::kDouble); }
}
