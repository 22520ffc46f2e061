// Optimizers over parameter slices (DESIGN §5): AdamW and RMSprop, elementwise, so a sharded
// step on a slice equals the unsharded step restricted to that slice. The only global
// quantity, the gradient norm used for clipping, comes from one all-reduce of the slices'
// squared norms (on the device; one host copy). The caller decides whether to step (every rank
// the same way) before calling step(). Update rules match torch.optim.AdamW / torch.optim.RMSprop; weight
// decay applies where the decay mask is 1 (matrices and embeddings, not norms or biases).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "kto/comm/communicator.h"
#include "kto/fsdp/optimizer_options.h"

namespace kto::fsdp {

// Elements [begin, begin + length) of a parameter tensor.
struct Segment {
  int64_t begin = 0, length = 0;
};

class ShardedOptimizer {
 public:
  // `params` are 1-D leaves whose .grad() holds this rank's gradient slice; `decay` lists,
  // per parameter, the segments weight decay applies to; `comm` nullptr means the parameters
  // are not sharded (the unsharded reference).
  ShardedOptimizer(std::vector<at::Tensor> params, std::vector<std::vector<Segment>> decay,
                   OptimizerOptions options, comm::Communicator* comm);

  // Global gradient norm over every rank's slices (collective when sharded).
  double grad_norm() const;
  // Scales the gradients by max_grad_norm / (grad_norm + 1e-6) when grad_norm exceeds
  // max_grad_norm (torch.nn.utils.clip_grad_norm_), then updates with learning rate `lr`.
  // `grad_norm` is the value grad_norm() returned; it must be finite.
  void step(double lr, double grad_norm);
  void zero_grad();

  int64_t step_count() const { return steps_; }
  void set_step_count(int64_t steps) { steps_ = steps; }
  // Optimizer state per parameter: {m, v} (adamw) or {v} (rmsprop).
  std::vector<std::vector<at::Tensor>>& state() { return state_; }
  const std::vector<std::vector<at::Tensor>>& state() const { return state_; }
  int64_t state_bytes() const;
  const OptimizerOptions& options() const { return options_; }

 private:
  std::vector<at::Tensor> params_;
  std::vector<std::vector<Segment>> decay_;
  OptimizerOptions options_;
  comm::Communicator* comm_;
  std::vector<std::vector<at::Tensor>> state_;
  int64_t steps_ = 0;
};

}  // namespace kto::fsdp
