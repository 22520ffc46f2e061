// Optimizers over parameter slices (DESIGN §5): AdamW and RMSprop, elementwise, so a sharded
// step on a slice equals the unsharded step restricted to that slice. The only global
// quantity, the gradient norm used for clipping, comes from an all-reduce of the slices'
// squared norms. Update rules match torch.optim.AdamW / torch.optim.RMSprop; weight decay
// applies where the decay mask is 1 (matrices and embeddings, not norms or biases).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kto/comm/process_group.h"

namespace kto::fsdp {

struct OptimizerOptions {
  std::string name = "adamw";         // adamw | rmsprop
  double beta1 = 0.9, beta2 = 0.999;  // adamw
  double alpha = 0.99;                // rmsprop smoothing
  double eps = 1e-8;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;  // 0: no clipping
};

// Elements [begin, begin + length) of a parameter tensor.
struct Segment {
  int64_t begin = 0, length = 0;
};

struct StepResult {
  double grad_norm = 0;  // before clipping, over all ranks
  bool finite = true;    // false: no update was made (same answer on every rank)
};

class ShardedOptimizer {
 public:
  // `params` are 1-D leaves whose .grad() holds this rank's gradient slice; `decay` lists,
  // per parameter, the segments weight decay applies to; `group` nullptr means
  // the parameters are not sharded (the unsharded reference).
  ShardedOptimizer(std::vector<at::Tensor> params, std::vector<std::vector<Segment>> decay,
                   OptimizerOptions options, const comm::ProcessGroup* group);

  // Global gradient norm (collective when sharded).
  double grad_norm() const;
  // Clips to max_grad_norm and updates with learning rate `lr`. A non-finite norm skips the
  // update on every rank.
  StepResult step(double lr);
  void zero_grad();

  int64_t step_count() const { return steps_; }
  void set_step_count(int64_t steps) { steps_ = steps; }
  // Optimizer state per parameter: {m, v} (adamw) or {v} (rmsprop).
  std::vector<std::vector<at::Tensor>>& state() { return state_; }
  int64_t state_bytes() const;
  const OptimizerOptions& options() const { return options_; }

 private:
  std::vector<at::Tensor> params_;
  std::vector<std::vector<Segment>> decay_;
  OptimizerOptions options_;
  const comm::ProcessGroup* group_;
  std::vector<std::vector<at::Tensor>> state_;
  int64_t steps_ = 0;
};

}  // namespace kto::fsdp
