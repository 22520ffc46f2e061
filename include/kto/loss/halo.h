// The human-aware losses (HALOs) as pure functions of per-example sequence log-probs
// (DESIGN §3). No MPI, no ranks: the one global statistic, the reference point z0, is an input.
//
// Unpaired (one example = prompt, completion, desirable or not):
//   kto        l_D = w_D (1 - sigmoid(beta (r - z0))),  l_U = w_U (1 - sigmoid(beta (z0 - r)))
//   kto_logsigmoid  KTO with -log sigmoid(.) in place of 1 - sigmoid(.) (HALOs legacy)
//   kto_zero   KTO with z0 = 0 and unit weights (HALOs' KTO-zero)
//   apo_zero   l_D = w_D (1 - sigmoid(beta r)),  l_U = w_U sigmoid(beta r)      (TRL)
//   sft        mean token NLL of desirable completions (undesirable ones get no loss)
//   csft       mean token NLL of every completion (the data carries the control token)
// with r = log pi(y|x) - log pi_ref(y|x) and z0 the detached reference point from mismatched
// pairs. The microbatch loss is the plain mean over this rank's examples.
//
// Paired (chosen c, rejected w of the same prompt; h = (pi_c - ref_c) - (pi_w - ref_w)):
//   dpo    -log sigmoid(beta h)
//   cdpo   -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
//   ipo    (h_len - 1 / (2 tau))^2, log-ratios divided by completion lengths
//   simpo  -log sigmoid(beta (pi_c / len_c - pi_w / len_w) - gamma_beta_ratio * beta)
//   slic   max(0, margin - (pi_c - pi_w)) + lambda * (-pi_c / len_c)
//
// z0, as a step computes it:
//   stats = kl_statistics(kl_terms, estimator);     // this rank's [2]
//   all-reduce(stats, sum)                          // the global microbatch's
//   z0 = reference_point(stats, estimator).z0;
#pragma once

#include <ATen/core/Tensor.h>

#include "kto/loss/options.h"

namespace kto::loss {

// This rank's statistics [2] of its KL terms KL_i = log pi(y'_i|x_i) - log pi_ref(y'_i|x_i), whose
// sum over ranks determines z0 (kto/loss/options.h: Estimator): pooled (sum, count), trl (this
// rank's mean, 1), halos (sum, count of nonzero terms). Detached; fp64 for fp64 terms, else fp32.
at::Tensor kl_statistics(const at::Tensor& kl_terms, Estimator estimator);

struct ReferencePoint {
  at::Tensor z0;            // scalar, detached, clamped at 0
  at::Tensor z0_unclamped;  // scalar, detached
};
// z0 from the statistics summed over ranks.
ReferencePoint reference_point(const at::Tensor& global_statistics, Estimator estimator);

// Per-example inputs of one microbatch on this rank (1-D tensors of length n).
struct UnpairedInputs {
  at::Tensor policy_logps;  // sum over completion tokens; carries the gradient
  at::Tensor ref_logps;     // detached (unused by sft, csft)
  at::Tensor desirable;     // bool
  at::Tensor num_tokens;    // completion tokens (SFT normalisation)
};

struct PairedInputs {
  at::Tensor policy_chosen, policy_rejected;  // carry the gradient
  at::Tensor ref_chosen, ref_rejected;        // undefined for losses without a reference
  at::Tensor len_chosen, len_rejected;        // completion tokens
};

struct LossOutput {
  at::Tensor loss;         // scalar: the microbatch loss (plain mean over this rank's examples)
  at::Tensor per_example;  // [n] (pairs for paired losses), detached
  at::Tensor rewards;      // [n] beta * r (unpaired) or [2n] chosen then rejected (paired), detached
};

// `z0`: the reference point (scalar; read by kto and kto_logsigmoid only). Class weights are
// options.desirable_weight.value and undesirable_weight.value (resolved from `auto` already).
LossOutput unpaired_loss(const UnpairedInputs& in, const at::Tensor& z0, const LossOptions& options);
LossOutput paired_loss(const PairedInputs& in, const LossOptions& options);

}  // namespace kto::loss
