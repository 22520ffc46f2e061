// The optimizer's options: the `optim` section of a kto config (STYLE 9). Light on purpose (no
// ATen): the config parser includes it; kto/fsdp/optimizer.h steps with it.
#pragma once

#include <string>

#include "kto/util/choice.h"

namespace kto::fsdp {

enum class OptimizerName { adamw, rmsprop };
inline constexpr ChoiceTable<OptimizerName, 2> kOptimizerNames{
    {{OptimizerName::adamw, "adamw"}, {OptimizerName::rmsprop, "rmsprop"}}};

struct OptimizerOptions {
  OptimizerName name = OptimizerName::adamw;
  double lr = 5e-6;                   // peak learning rate (the schedule scales it per step)
  double beta1 = 0.9, beta2 = 0.999;  // adamw
  double alpha = 0.99;                // rmsprop smoothing
  double eps = 1e-8;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;  // 0: no clipping

  template <class V>
  void visit(V& v) {
    v.choice("name", name, kOptimizerNames, "optimizer (the paper's HALOs recipe uses rmsprop)");
    v.field("lr", lr, "peak learning rate");
    v.field("beta1", beta1, "AdamW beta1");
    v.field("beta2", beta2, "AdamW beta2");
    v.field("alpha", alpha, "RMSprop smoothing constant");
    v.field("eps", eps, "epsilon");
    v.field("weight_decay", weight_decay, "weight decay (AdamW decoupled; not on norms and biases)");
    v.field("max_grad_norm", max_grad_norm, "clip the global gradient norm to this (0: no clipping)");
  }
  // Throws kto::ConfigError naming `source` and the key (`prefix` + key, e.g. "optim.lr").
  void validate(const std::string& source, const std::string& prefix) const;
  // State tensors per parameter: 2 (m, v) for adamw, 1 (v) for rmsprop.
  int state_tensors() const { return name == OptimizerName::adamw ? 2 : 1; }
};

}  // namespace kto::fsdp
