// The objective's options: the `loss` section of a kto config (STYLE 9). Light on purpose (no
// ATen): the config parser includes it; kto/loss/halo.h computes with it.
#pragma once

#include <string>

#include "kto/util/choice.h"

namespace kto::loss {

// The human-aware losses (formulas in kto/loss/halo.h).
enum class LossName { kto, kto_logsigmoid, kto_zero, apo_zero, sft, csft, dpo, cdpo, ipo, simpo, slic };
inline constexpr ChoiceTable<LossName, 11> kLossNames{{{LossName::kto, "kto"},
                                                       {LossName::kto_logsigmoid, "kto_logsigmoid"},
                                                       {LossName::kto_zero, "kto_zero"},
                                                       {LossName::apo_zero, "apo_zero"},
                                                       {LossName::sft, "sft"},
                                                       {LossName::csft, "csft"},
                                                       {LossName::dpo, "dpo"},
                                                       {LossName::cdpo, "cdpo"},
                                                       {LossName::ipo, "ipo"},
                                                       {LossName::simpo, "simpo"},
                                                       {LossName::slic, "slic"}}};
inline const char* name(LossName n) { return choice_name(kLossNames, n); }

// Chosen and rejected completions of one prompt (data prepared with --keep-pairs).
bool is_paired(LossName name);
// Needs reference log-probs (false for simpo, slic, sft, csft).
bool uses_reference(LossName name);
// Needs the KL pass and the reference point z0 (kto, kto_logsigmoid).
bool uses_kl(LossName name);
// KTO proper (kto, kto_logsigmoid, kto_zero): the class-weight rule of the paper applies.
bool is_kto(LossName name);

struct LossOptions;
// The options `options.name` uses, for the banner: "beta 0.1, lambda_D 1, lambda_U 1.33, z0 pooled"
// for KTO, "beta 0.1" for DPO, "margin 1, lambda 0.1" for SLiC, ...
std::string describe(const LossOptions& options);

// How the reference point z0 is estimated from the KL terms KL_i of the global microbatch:
//   pooled  max(0, sum_i KL_i / n) over all ranks' examples (default; exact with unequal counts)
//   trl     max(0, mean over ranks of each rank's mean) (TRL, HALOs legacy, OpenRLHF)
//   halos   max(0, sum_i KL_i / max(1, #{KL_i != 0})) over all ranks (HALOs main: empty KL
//           completions, whose KL_i is exactly 0, are not counted)
enum class Estimator { pooled, trl, halos };
inline constexpr ChoiceTable<Estimator, 3> kEstimators{
    {{Estimator::pooled, "pooled"}, {Estimator::trl, "trl"}, {Estimator::halos, "halos"}}};

// A class weight: a positive number, or `auto` — the paper's rule applied to the training
// data's class counts (resolve_class_weights, once the data is known).
struct ClassWeight {
  bool automatic = false;
  double value = 1.0;
};

struct LossOptions {
  LossName name = LossName::kto;
  double beta = 0.1;
  ClassWeight desirable_weight, undesirable_weight;
  Estimator estimator = Estimator::pooled;
  double cdpo_epsilon = 0.2, ipo_tau = 0.1, simpo_gamma_beta_ratio = 0.5, slic_margin = 1.0,
         slic_lambda = 0.1;

  template <class V>
  void visit(V& v) {
    v.choice("name", name, kLossNames, "the objective (paired losses need data prepared with --keep-pairs)");
    v.field("beta", beta, "KTO/DPO temperature beta");
    v.field("desirable_weight", desirable_weight,
            "lambda_D: a number, or auto (the paper's rule from the class counts)");
    v.field("undesirable_weight", undesirable_weight, "lambda_U: a number, or auto");
    v.choice(
        "estimator", estimator, kEstimators,
        "z0 estimator: pooled over the global microbatch, TRL's mean of rank means, HALOs' nonzero mean");
    v.field("cdpo_epsilon", cdpo_epsilon, "cDPO label smoothing");
    v.field("ipo_tau", ipo_tau, "IPO tau");
    v.field("simpo_gamma_beta_ratio", simpo_gamma_beta_ratio, "SimPO gamma / beta");
    v.field("slic_margin", slic_margin, "SLiC calibration margin");
    v.field("slic_lambda", slic_lambda, "SLiC weight of the chosen-completion NLL");
  }
  // Throws kto::ConfigError naming `source` and the key (`prefix` + key, e.g. "loss.beta").
  void validate(const std::string& source, const std::string& prefix) const;
};

// Replaces automatic weights by the values the class counts give (kto/data
// recommended_class_weights); explicit weights are kept. The losses need resolved weights.
void resolve_class_weights(LossOptions& options, double auto_desirable, double auto_undesirable);

}  // namespace kto::loss
