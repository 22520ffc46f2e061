#include "kto/loss/halo.h"

#include <ATen/ATen.h>

#include "kto/util/check.h"

namespace kto::loss {

using detail::str_cat;

Estimator parse_estimator(const std::string& name) {
  if (name == "pooled") return Estimator::pooled;
  if (name == "trl") return Estimator::trl;
  if (name == "halos") return Estimator::halos;
  throw ConfigError("unknown z0 estimator '" + name + "' (pooled, trl, halos)");
}

bool is_paired(const std::string& n) {
  return n == "dpo" || n == "cdpo" || n == "ipo" || n == "simpo" || n == "slic";
}
bool uses_reference(const std::string& n) { return n != "simpo" && n != "sft" && n != "csft" && n != "slic"; }
bool uses_kl(const std::string& n) { return n == "kto" || n == "kto_logsigmoid"; }

void validate(const LossOptions& o, const std::string& p) {
  static const char* names[] = {"kto", "kto_logsigmoid", "kto_zero", "apo_zero", "sft", "csft",
                                "dpo", "cdpo",           "ipo",      "simpo",    "slic"};
  bool known = false;
  for (const char* n : names) known = known || o.name == n;
  if (!known) {
    throw ConfigError(
        str_cat("key '", p, "name': unknown loss '", o.name,
                "' (kto, kto_logsigmoid, kto_zero, apo_zero, sft, csft, dpo, cdpo, ipo, simpo, slic)"));
  }
  if (!(o.beta > 0)) throw ConfigError(str_cat("key '", p, "beta': must be positive, got ", o.beta));
  if (!(o.desirable_weight > 0))
    throw ConfigError(str_cat("key '", p, "desirable_weight': must be positive"));
  if (!(o.undesirable_weight > 0))
    throw ConfigError(str_cat("key '", p, "undesirable_weight': must be positive"));
  if (!(o.cdpo_epsilon >= 0 && o.cdpo_epsilon < 0.5))
    throw ConfigError(str_cat("key '", p, "cdpo_epsilon': must be in [0, 0.5)"));
  if (!(o.ipo_tau > 0)) throw ConfigError(str_cat("key '", p, "ipo_tau': must be positive"));
}

at::Tensor reference_point_stats(const at::Tensor& kl, Estimator estimator) {
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

std::pair<at::Tensor, at::Tensor> reference_point(const at::Tensor& kl, Estimator estimator,
                                                  Reducer& reducer) {
  at::Tensor stats = reference_point_stats(kl, estimator);
  reducer.sum_(stats);  // global (sum, count), all-reduced across ranks
  const at::Tensor count = estimator == Estimator::halos ? stats[1].clamp_min(1.0) : stats[1];
  const at::Tensor z0_unclamped = stats[0] / count;
  return {z0_unclamped.clamp_min(0.0), z0_unclamped};
}

LossOutput unpaired_loss(const UnpairedInputs& in, const LossOptions& o, Reducer& reducer) {
  const at::Tensor& logp = in.policy_logps;
  const at::TensorOptions opts = logp.options().requires_grad(false);
  const at::Tensor desirable = in.desirable.to(logp.device()).to(at::kBool);
  const int64_t n = logp.size(0);
  LossOutput out;
  out.z0 = at::zeros({}, opts);
  out.z0_unclamped = at::zeros({}, opts);
  const at::Tensor weights = at::where(desirable, at::full({n}, o.desirable_weight, opts),
                                       at::full({n}, o.undesirable_weight, opts));
  at::Tensor per;
  if (o.name == "sft" || o.name == "csft") {
    const at::Tensor nll = -logp / in.num_tokens.to(logp.device()).to(logp.scalar_type()).clamp_min(1.0);
    per = o.name == "sft" ? nll * desirable.to(logp.scalar_type()) : nll;
    out.rewards = at::zeros({n}, opts);
  } else {
    const at::Tensor r = logp - in.ref_logps.detach().to(logp.scalar_type());
    out.rewards = (o.beta * r).detach();
    if (o.name == "kto" || o.name == "kto_logsigmoid") {
      const at::Tensor kl = in.kl_policy_logps.detach() - in.kl_ref_logps.detach();
      std::tie(out.z0, out.z0_unclamped) = reference_point(kl, o.estimator, reducer);
      const at::Tensor z0 = out.z0.to(logp.scalar_type());
      const at::Tensor margin = at::where(desirable, o.beta * (r - z0), o.beta * (z0 - r));
      per = weights * (o.name == "kto" ? 1.0 - at::sigmoid(margin) : -at::log_sigmoid(margin));
    } else if (o.name == "kto_zero") {
      per = at::where(desirable, 1.0 - at::sigmoid(o.beta * r), 1.0 - at::sigmoid(-o.beta * r));
    } else if (o.name == "apo_zero") {
      per = weights * at::where(desirable, 1.0 - at::sigmoid(o.beta * r), at::sigmoid(o.beta * r));
    } else {
      throw ConfigError("loss '" + o.name + "' is a paired loss: it needs paired data");
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
  out.z0 = at::zeros({}, pc.options().requires_grad(false));
  out.z0_unclamped = out.z0;
  at::Tensor per;
  const at::Tensor h = (pc - rc) - (pw - rw);
  if (o.name == "dpo") {
    per = -at::log_sigmoid(o.beta * h);
  } else if (o.name == "cdpo") {
    per =
        -(1.0 - o.cdpo_epsilon) * at::log_sigmoid(o.beta * h) - o.cdpo_epsilon * at::log_sigmoid(-o.beta * h);
  } else if (o.name == "ipo") {
    per = at::pow((pc - rc) / lc - (pw - rw) / lw - 1.0 / (2.0 * o.ipo_tau), 2);
  } else if (o.name == "simpo") {
    per = -at::log_sigmoid(o.beta * (pc / lc - pw / lw) - o.simpo_gamma_beta_ratio * o.beta);
  } else if (o.name == "slic") {
    per = at::clamp_min(o.slic_margin - (pc - pw), 0.0) + o.slic_lambda * (-pc / lc);
  } else {
    throw ConfigError("loss '" + o.name + "' is an unpaired loss");
  }
  out.rewards = at::cat({o.beta * (pc - rc), o.beta * (pw - rw)}).detach();
  out.loss = per.numel() ? per.mean() : at::zeros({}, pc.options());
  out.per_example = per.detach();
  return out;
}

}  // namespace kto::loss
