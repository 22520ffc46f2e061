#include "kto/fsdp/optimizer.h"

#include <ATen/ATen.h>

#include <cmath>

#include "kto/util/check.h"

namespace kto::fsdp {

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
  std::vector<at::Tensor> squares;
  for (const at::Tensor& p : params_) {
    if (p.grad().defined()) squares.push_back(p.grad().to(at::kDouble).pow(2).sum());
  }
  if (squares.empty()) return 0.0;
  at::Tensor sq = at::stack(squares).cumsum(0)[-1].contiguous();
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
