#include "kto/train/run_plan.h"

#include <cmath>

#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/log.h"

namespace kto::train {

using detail::str_cat;
using loss::LossName;

void check_files_exist(const std::vector<std::string>& files, const char* key) {
  for (const std::string& f : files) {
    if (!path_exists(f)) throw key_error("", key, "no such file '" + f + "'");
  }
}

namespace {

// CSFT learns from the control tokens at the end of each prompt; other losses should not see them.
void check_control_tokens(LossName name, const data::Dataset& train, const data::Dataset* eval) {
  const std::string& control = train.attributes().control_tokens;
  if (eval && eval->attributes().control_tokens != control) {
    throw key_error("", "data.eval",
                    str_cat("control tokens '", eval->attributes().control_tokens, "' but data.train has '",
                            control, "' (prepare both with the same --control-tokens)"));
  }
  if (name == LossName::csft && control.empty()) {
    log::warn("train",
              "loss.name csft, but the training data has no control tokens (kto-data prepare "
              "--control-tokens GOOD,BAD): this trains SFT on every completion, undesirable ones too");
  } else if (name != LossName::csft && !control.empty()) {
    log::warn("train", "the training data's prompts end with CSFT control tokens (", control,
              "), which only loss.name csft expects");
  }
}

// The paper's rule for imbalanced data: lambda_D n_D / (lambda_U n_U) in [1, 4/3].
void check_class_weights(const loss::LossOptions& l, const data::Dataset& train, double auto_d,
                         double auto_u) {
  if (!loss::is_kto(l.name) || l.desirable_weight.automatic || l.undesirable_weight.automatic) return;
  const double ratio = l.desirable_weight.value * static_cast<double>(train.count(true)) /
                       (l.undesirable_weight.value * static_cast<double>(train.count(false)));
  if (ratio < 1.0 - 1e-9 || ratio > 4.0 / 3.0 + 1e-9) {
    log::warn("train", "class weights give lambda_D*n_D/(lambda_U*n_U) = ", ratio,
              ", outside the paper's [1, 4/3];", " recommended: loss.desirable_weight=", auto_d,
              " loss.undesirable_weight=", auto_u, " (or auto)");
  }
}

}  // namespace

RunPlan check_run(const config::Config& config, const data::Dataset& train, const data::Dataset* eval,
                  int64_t world_size) {
  const data::DataOptions& d = config.data;
  RunPlan plan;
  plan.loss = config.loss;
  plan.grad_accum = d.grad_accum;
  if (d.global_batch > 0) {
    if (d.global_batch % (d.micro_batch * world_size) != 0) {
      throw key_error("", "data.global_batch",
                      str_cat(d.global_batch, " is not divisible by micro_batch (", d.micro_batch,
                              ") x world size (", world_size, ")"));
    }
    plan.grad_accum = d.global_batch / (d.micro_batch * world_size);
  }
  const LossName name = config.loss.name;
  if (loss::uses_kl(name) && d.micro_batch < 2) {
    throw key_error(
        "", "data.micro_batch",
        str_cat(d.micro_batch, " leaves no mismatched pair for KTO's KL estimate; use 2 or more"));
  }
  if (loss::is_paired(name) != train.paired()) {
    throw key_error("", "loss.name",
                    loss::is_paired(name)
                        ? str_cat(loss::name(name), " needs paired data (kto-data prepare --keep-pairs)")
                        : str_cat(loss::name(name), " is an unpaired loss but data.train is paired"));
  }
  check_control_tokens(name, train, eval);
  const auto [auto_d, auto_u] = data::recommended_class_weights(train.count(true), train.count(false));
  loss::resolve_class_weights(plan.loss, auto_d, auto_u);
  check_class_weights(config.loss, train, auto_d, auto_u);

  const int64_t items = train.paired() ? train.size() / 2 : train.size();
  const int64_t global_batch = d.micro_batch * plan.grad_accum * world_size;
  plan.total_steps = config.train.steps > 0
                         ? config.train.steps
                         : static_cast<int64_t>(std::ceil(config.train.epochs * static_cast<double>(items) /
                                                          static_cast<double>(global_batch)));
  plan.total_steps = std::max<int64_t>(1, plan.total_steps);
  return plan;
}

}  // namespace kto::train
