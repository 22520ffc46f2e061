// One forward pass over a model's units, written once (DESIGN §4): embedding, blocks, head.
//
// A unit computes from its flat weight buffers — those of ModelLayout::weight_units(u): its own,
// plus the embedding's for a tied head. Where the buffers come from is a UnitRunner's business:
// a dense model hands out its own memory; kto/fsdp all-gathers shards (with prefetch), frees or
// keeps them, and reduce-scatters their gradients. Neither the walk nor the units know which.
//
//   auto context = std::make_shared<ForwardContext>();   // attention inputs, token selection
//   at::Tensor out = forward_units(config, layout, runner, ids_BT, context);
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <vector>

#include "kto/model/blocks.h"
#include "kto/model/layout.h"
#include "kto/model/logprob.h"
#include "kto/model/model_config.h"

namespace kto::model {

// What the units of one forward share besides their weights.
struct ForwardContext {
  AttentionInputs attention;
  // The head's output: with a selection (rows defined), per-sequence log-prob sums of the
  // selected tokens [B] (sequence_logprob_sums); without, the final-normed hidden states [B, T, C].
  TokenSelection selection;
  int64_t logprob_chunk_rows = 0;  // 0: default_chunk_rows
};

// Unit `unit`'s output for input x (token ids for the embedding), from the flat buffers of
// layout.weight_units(unit), in that order. A block also leaves its keys and values in
// `kv_out` and reads a continuation's provider's from `prefix` (block_forward).
at::Tensor unit_forward(const ModelConfig& config, const ModelLayout& layout, size_t unit,
                        const std::vector<at::Tensor>& flats, const at::Tensor& x,
                        const ForwardContext& context, const BlockKV* prefix = nullptr,
                        BlockKV* kv_out = nullptr);

// One unit of one forward, bound to its context: y = fn(flats, x). It stays valid after the
// forward returns (it owns the context; config and layout belong to the model), so a runner
// may call it again in backward to recompute the unit.
using UnitFn = std::function<at::Tensor(const std::vector<at::Tensor>& flats, const at::Tensor& x)>;

class UnitRunner {
 public:
  virtual ~UnitRunner() = default;
  // Obtains the buffers of layout.weight_units(unit), returns fn(buffers, x) and releases them;
  // how gradients reach the weights (if at all) is the runner's.
  virtual at::Tensor run(size_t unit, const at::Tensor& x, const UnitFn& fn) = 0;
};

// x = ids; then, for every unit in layout order, x = runner.run(u, x, <unit u>). Returns the
// head's output (see ForwardContext::selection).
at::Tensor forward_units(const ModelConfig& config, const ModelLayout& layout, UnitRunner& runner,
                         const at::Tensor& ids_BT, std::shared_ptr<const ForwardContext> context);

// Several forwards in one walk of the units: unit u runs on every input before unit u + 1
// does, so its buffers are obtained once for all of them. Only the first is differentiable;
// the others ride along without grad, in the first call of each unit only (a runner that
// recomputes a unit in backward recomputes the first input alone). A ride-along may be a
// continuation of the first (a packed batch with prefixes, packing.h): at every block it reads
// the first input's keys and values, detached. Otherwise each output is exactly what
// forward_units gives for that input alone (same shapes, same kernels). The frozen
// reference's target and KL passes, and the policy's.
std::vector<at::Tensor> forward_units_each(
    const ModelConfig& config, const ModelLayout& layout, UnitRunner& runner,
    const std::vector<at::Tensor>& ids_BT,
    const std::vector<std::shared_ptr<const ForwardContext>>& contexts);

}  // namespace kto::model
