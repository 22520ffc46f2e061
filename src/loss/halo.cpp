#include "kto/loss/halo.h"

#include <ATen/ATen.h>

#include "kto/util/check.h"

namespace kto::loss {

using detail::str_cat;

at::Tensor kl_statistics(const at::Tensor& kl, Estimator estimator) {
  const at::ScalarType acc = kl.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor k = kl.detach().to(acc);
  at::Tensor stats;
  switch (estimator) {
    case Estimator::pooled:  // (sum, count) over every rank's examples
      stats = at::stack({k.sum(), at::full({}, static_cast<double>(k.numel()), k.options())});
      break;
    case Estimator::trl:  // (this rank's mean, 1): the sum over ranks divided by the rank count
      stats = at::stack({k.numel() ? k.mean() : at::zeros({}, k.options()), at::ones({}, k.options())});
      break;
    case Estimator::halos:  // (sum, nonzero count): exact zeros are empty KL completions
      stats = at::stack({k.sum(), k.ne(0).sum().to(acc)});
      break;
  }
  return stats;
}

ReferencePoint reference_point(const at::Tensor& stats, Estimator estimator) {
  const at::Tensor count = estimator == Estimator::halos ? stats[1].clamp_min(1.0) : stats[1];
  const at::Tensor z0_unclamped = (stats[0] / count).detach();
  return {z0_unclamped.clamp_min(0.0), z0_unclamped};
}

LossOutput unpaired_loss(const UnpairedInputs& in, const at::Tensor& z0_in, const LossOptions& o) {
  const at::Tensor& logp = in.policy_logps;
  const at::TensorOptions opts = logp.options().requires_grad(false);
  const at::Tensor desirable = in.desirable.to(logp.device()).to(at::kBool);
  const int64_t n = logp.size(0);
  KTO_CHECK(!o.desirable_weight.automatic && !o.undesirable_weight.automatic,
            "class weights must be resolved (loss::resolve_class_weights) before the loss");
  LossOutput out;
  const at::Tensor weights = at::where(desirable, at::full({n}, o.desirable_weight.value, opts),
                                       at::full({n}, o.undesirable_weight.value, opts));
  at::Tensor per;
  if (o.name == LossName::sft || o.name == LossName::csft) {
    const at::Tensor nll = -logp / in.num_tokens.to(logp.device()).to(logp.scalar_type()).clamp_min(1.0);
    per = o.name == LossName::sft ? nll * desirable.to(logp.scalar_type()) : nll;
    out.rewards = at::zeros({n}, opts);
  } else {
    const at::Tensor r = logp - in.ref_logps.detach().to(logp.scalar_type());
    out.rewards = (o.beta * r).detach();
    switch (o.name) {
      case LossName::kto:
      case LossName::kto_logsigmoid: {
        const at::Tensor z0 = z0_in.detach().to(logp.scalar_type());
        const at::Tensor margin = at::where(desirable, o.beta * (r - z0), o.beta * (z0 - r));
        per = weights * (o.name == LossName::kto ? 1.0 - at::sigmoid(margin) : -at::log_sigmoid(margin));
        break;
      }
      case LossName::kto_zero:
        per = at::where(desirable, 1.0 - at::sigmoid(o.beta * r), 1.0 - at::sigmoid(-o.beta * r));
        break;
      case LossName::apo_zero:
        per = weights * at::where(desirable, 1.0 - at::sigmoid(o.beta * r), at::sigmoid(o.beta * r));
        break;
      default: throw ConfigError(str_cat("loss '", name(o.name), "' is a paired loss: it needs paired data"));
    }
  }
  out.loss = n ? per.mean() : at::zeros({}, logp.options());
  out.per_example = per.detach();
  return out;
}

LossOutput paired_loss(const PairedInputs& in, const LossOptions& o) {
  const at::Tensor& pc = in.policy_chosen;
  const at::Tensor& pw = in.policy_rejected;
  const at::ScalarType t = pc.scalar_type();
  auto ref = [&](const at::Tensor& x) { return x.defined() ? x.detach().to(t) : at::zeros_like(pc); };
  const at::Tensor rc = ref(in.ref_chosen), rw = ref(in.ref_rejected);
  const at::Tensor lc = in.len_chosen.to(pc.device()).to(t).clamp_min(1.0),
                   lw = in.len_rejected.to(pc.device()).to(t).clamp_min(1.0);
  LossOutput out;
  at::Tensor per;
  const at::Tensor h = (pc - rc) - (pw - rw);
  switch (o.name) {
    case LossName::dpo: per = -at::log_sigmoid(o.beta * h); break;
    case LossName::cdpo:
      per = -(1.0 - o.cdpo_epsilon) * at::log_sigmoid(o.beta * h) -
            o.cdpo_epsilon * at::log_sigmoid(-o.beta * h);
      break;
    case LossName::ipo: per = at::pow((pc - rc) / lc - (pw - rw) / lw - 1.0 / (2.0 * o.ipo_tau), 2); break;
    case LossName::simpo:
      per = -at::log_sigmoid(o.beta * (pc / lc - pw / lw) - o.simpo_gamma_beta_ratio * o.beta);
      break;
    case LossName::slic:
      per = at::clamp_min(o.slic_margin - (pc - pw), 0.0) + o.slic_lambda * (-pc / lc);
      break;
    default: throw ConfigError(str_cat("loss '", name(o.name), "' is an unpaired loss"));
  }
  out.rewards = at::cat({o.beta * (pc - rc), o.beta * (pw - rw)}).detach();
  out.loss = per.numel() ? per.mean() : at::zeros({}, pc.options());
  out.per_example = per.detach();
  return out;
}

}  // namespace kto::loss
