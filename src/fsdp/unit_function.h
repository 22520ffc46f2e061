// The two ways gradients flow to FSDP slices (see unit_function.cpp). Private to src/fsdp.
#pragma once

#include "kto/fsdp/sharded_model.h"

namespace kto::fsdp {

// reshard_after_forward: one autograd node per unit, recomputing the unit in backward.
at::Tensor forward_resharded(ShardedModel& model, const at::Tensor& ids, const ShardedModel::RunContext& ctx);
// Gathered units kept for backward by ordinary autograd.
at::Tensor forward_kept(ShardedModel& model, const at::Tensor& ids, const ShardedModel::RunContext& ctx);

}  // namespace kto::fsdp
