// The human-aware losses (HALOs) as pure functions of per-example sequence log-probs
// (DESIGN §3). No MPI, no ranks: global statistics go through the narrow Reducer interface.
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
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace kto::loss {

// Sums a small tensor over all ranks in place (an all-reduce). The loss code's only view of
// the world; the trainer implements it with the communicator, tests with a local stub.
class Reducer {
 public:
  virtual ~Reducer() = default;
  virtual void sum_(at::Tensor& values) = 0;
  virtual int64_t world_size() const = 0;
};

// One process: sums are the local values.
class LocalReducer : public Reducer {
 public:
  void sum_(at::Tensor&) override {}
  int64_t world_size() const override { return 1; }
};

// Hands back sums computed elsewhere (a whole eval set's statistics, one all-reduce earlier).
class PresetReducer : public Reducer {
 public:
  PresetReducer(at::Tensor sums, int64_t world) : sums_(std::move(sums)), world_(world) {}
  void sum_(at::Tensor& values) override { values.copy_(sums_); }
  int64_t world_size() const override { return world_; }

 private:
  at::Tensor sums_;
  int64_t world_;
};

// How the reference point z0 is estimated from the KL terms KL_i of the global microbatch:
//   pooled  max(0, sum_i KL_i / n) over all ranks' examples (default; exact with unequal counts)
//   trl     max(0, mean over ranks of each rank's mean) (TRL, HALOs legacy, OpenRLHF)
//   halos   max(0, sum_i KL_i / max(1, #{KL_i != 0})) over all ranks (HALOs main: empty KL
//           completions, whose KL_i is exactly 0, are not counted)
enum class Estimator { pooled, trl, halos };
Estimator parse_estimator(const std::string& name);  // throws kto::ConfigError

struct LossOptions {
  std::string name = "kto";
  double beta = 0.1;
  double desirable_weight = 1.0, undesirable_weight = 1.0;
  Estimator estimator = Estimator::pooled;
  double cdpo_epsilon = 0.2;
  double ipo_tau = 0.1;
  double simpo_gamma_beta_ratio = 0.5;
  double slic_margin = 1.0, slic_lambda = 0.1;
};

bool is_paired(const std::string& name);
bool uses_reference(const std::string& name);  // false for simpo, sft, csft
bool uses_kl(const std::string& name);         // kto only
// Throws kto::ConfigError naming `key_prefix` + the offending key.
void validate(const LossOptions& options, const std::string& key_prefix);

// Per-example inputs of one microbatch on this rank (1-D tensors of length n).
struct UnpairedInputs {
  at::Tensor policy_logps;     // sum over completion tokens; carries the gradient
  at::Tensor ref_logps;        // detached
  at::Tensor kl_policy_logps;  // mismatched pairs; detached (KTO only)
  at::Tensor kl_ref_logps;
  at::Tensor desirable;   // bool
  at::Tensor num_tokens;  // completion tokens (SFT normalisation)
};

struct PairedInputs {
  at::Tensor policy_chosen, policy_rejected;  // carry the gradient
  at::Tensor ref_chosen, ref_rejected;
  at::Tensor len_chosen, len_rejected;  // completion tokens
};

struct LossOutput {
  at::Tensor loss;         // scalar: the microbatch loss (plain mean over this rank's examples)
  at::Tensor per_example;  // [n] (pairs for paired losses), detached
  at::Tensor z0;           // scalar, detached, clamped (0 for losses without a reference point)
  at::Tensor z0_unclamped;
  at::Tensor rewards;  // [n] beta * r (unpaired) or [2n] chosen then rejected (paired), detached
};

LossOutput unpaired_loss(const UnpairedInputs& in, const LossOptions& options, Reducer& reducer);
LossOutput paired_loss(const PairedInputs& in, const LossOptions& options);

// The reference point alone: {z0, z0_unclamped}.
std::pair<at::Tensor, at::Tensor> reference_point(const at::Tensor& kl_terms, Estimator estimator,
                                                  Reducer& reducer);
// The statistics reference_point() sums over ranks for `kl_terms` on this rank.
at::Tensor reference_point_stats(const at::Tensor& kl_terms, Estimator estimator);

}  // namespace kto::loss
