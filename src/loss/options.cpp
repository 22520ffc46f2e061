#include "kto/loss/options.h"

#include <cmath>

#include "kto/util/check.h"

namespace kto::loss {

using detail::str_cat;

bool is_paired(LossName n) {
  switch (n) {
    case LossName::dpo:
    case LossName::cdpo:
    case LossName::ipo:
    case LossName::simpo:
    case LossName::slic: return true;
    default: return false;
  }
}

bool uses_reference(LossName n) {
  return n != LossName::simpo && n != LossName::sft && n != LossName::csft && n != LossName::slic;
}

bool uses_kl(LossName n) { return n == LossName::kto || n == LossName::kto_logsigmoid; }

bool is_kto(LossName n) { return uses_kl(n) || n == LossName::kto_zero; }

void LossOptions::validate(const std::string& source, const std::string& p) const {
  auto fail = [&](const char* key, const std::string& what) { throw key_error(source, p + key, what); };
  // `!(lo < x && x <= hi)` also refuses NaN; the upper bounds refuse .inf and absurd magnitudes.
  if (!(beta > 0 && beta <= 1e4)) fail("beta", str_cat("must be in (0, 1e4], got ", beta));
  for (const auto& [key, w] :
       {std::pair<const char*, const ClassWeight&>{"desirable_weight", desirable_weight},
        {"undesirable_weight", undesirable_weight}}) {
    if (!w.automatic && !(w.value > 0 && w.value <= 1e6))
      fail(key, str_cat("must be a number in (0, 1e6] or auto, got ", w.value));
  }
  if (!(cdpo_epsilon >= 0 && cdpo_epsilon < 0.5)) fail("cdpo_epsilon", "must be in [0, 0.5)");
  if (!(ipo_tau > 0 && ipo_tau <= 1e6)) fail("ipo_tau", str_cat("must be in (0, 1e6], got ", ipo_tau));
  for (const auto& [key, v] :
       {std::pair<const char*, double>{"simpo_gamma_beta_ratio", simpo_gamma_beta_ratio},
        {"slic_margin", slic_margin},
        {"slic_lambda", slic_lambda}}) {
    if (!(std::abs(v) <= 1e6)) fail(key, str_cat("must be a finite number of magnitude <= 1e6, got ", v));
  }
}

void resolve_class_weights(LossOptions& o, double auto_desirable, double auto_undesirable) {
  if (o.desirable_weight.automatic) o.desirable_weight = {false, auto_desirable};
  if (o.undesirable_weight.automatic) o.undesirable_weight = {false, auto_undesirable};
}

}  // namespace kto::loss

namespace kto::loss {

std::string describe(const LossOptions& o) {
  using detail::str_cat;
  const std::string weights =
      str_cat(", lambda_D ", o.desirable_weight.value, ", lambda_U ", o.undesirable_weight.value);
  switch (o.name) {
    case LossName::kto:
    case LossName::kto_logsigmoid:
      return str_cat("beta ", o.beta, weights, ", z0 ", choice_name(kEstimators, o.estimator));
    case LossName::kto_zero: return str_cat("beta ", o.beta, weights, ", z0 = 0");
    case LossName::apo_zero: return str_cat("beta ", o.beta);
    case LossName::sft: return "negative log-likelihood of the desirable completions";
    case LossName::csft: return "negative log-likelihood of every completion after its control token";
    case LossName::dpo: return str_cat("beta ", o.beta);
    case LossName::cdpo: return str_cat("beta ", o.beta, ", label smoothing ", o.cdpo_epsilon);
    case LossName::ipo: return str_cat("tau ", o.ipo_tau);
    case LossName::simpo: return str_cat("beta ", o.beta, ", gamma/beta ", o.simpo_gamma_beta_ratio);
    case LossName::slic: return str_cat("margin ", o.slic_margin, ", lambda ", o.slic_lambda);
  }
  return "";
}

}  // namespace kto::loss
