#include "kto/model/forward.h"

#include <ATen/core/grad_mode.h>

#include "kto/model/packing.h"
#include "kto/util/check.h"

namespace kto::model {

at::Tensor unit_forward(const ModelConfig& config, const ModelLayout& layout, size_t unit,
                        const std::vector<at::Tensor>& flats, const at::Tensor& x,
                        const ForwardContext& context, const BlockKV* prefix, BlockKV* kv_out) {
  const UnitLayout& u = layout.units.at(unit);
  switch (u.kind) {
    case UnitKind::embed: return embed_forward(bind_embed(u, flats.at(0)), x);
    case UnitKind::block:
      return block_forward(config, bind_block(u, flats.at(0)), x, context.attention, prefix, kv_out);
    case UnitKind::head: {
      const HeadWeights head = bind_head(layout, flats);
      const at::Tensor hidden = head_norm_forward(config, head, x);
      if (!context.selection.rows.defined()) return hidden;
      return sequence_logprob_sums(hidden, head.lm_head, context.selection, context.logprob_chunk_rows);
    }
  }
  KTO_CHECK(false, "unknown unit kind of ", u.name);
}

at::Tensor forward_units(const ModelConfig& config, const ModelLayout& layout, UnitRunner& runner,
                         const at::Tensor& ids_BT, std::shared_ptr<const ForwardContext> context) {
  at::Tensor x = ids_BT;
  for (size_t u = 0; u < layout.units.size(); ++u) {  // embedding, blocks, head
    const UnitFn fn = [&config, &layout, context, u](const std::vector<at::Tensor>& flats,
                                                     const at::Tensor& in) {
      return unit_forward(config, layout, u, flats, in, *context);
    };
    x = runner.run(u, x, fn);
  }
  return x;
}

std::vector<at::Tensor> forward_units_each(
    const ModelConfig& config, const ModelLayout& layout, UnitRunner& runner,
    const std::vector<at::Tensor>& ids_BT,
    const std::vector<std::shared_ptr<const ForwardContext>>& contexts) {
  KTO_CHECK(!ids_BT.empty() && ids_BT.size() == contexts.size(), "forward_units_each: ", ids_BT.size(),
            " inputs for ", contexts.size(), " contexts");
  bool continuations = false;  // does a ride-along read the first input's keys and values?
  for (size_t i = 1; i < contexts.size(); ++i) {
    bool has_prefixes = false;
    for (const PackedGroup& g : contexts[i]->attention.packed) has_prefixes |= g.prefix_length > 0;
    continuations |= has_prefixes;
  }
  KTO_CHECK(!continuations || !contexts[0]->attention.packed.empty(),
            "continuations of a batch that is not packed");
  // The ride-alongs' state outlives this call where a runner keeps the unit function for a
  // recompute in backward; it is touched in the first call of each unit only.
  struct Walk {
    std::vector<at::Tensor> xs;
    std::vector<bool> done;
  };
  auto walk = std::make_shared<Walk>(Walk{ids_BT, std::vector<bool>(layout.units.size(), false)});
  for (size_t u = 0; u < layout.units.size(); ++u) {
    // The runner passes the first input; the others ride along in its first call, without grad.
    const UnitFn fn = [&config, &layout, contexts, walk, u, continuations](
                          const std::vector<at::Tensor>& flats, const at::Tensor& first) {
      if (walk->done[u]) return unit_forward(config, layout, u, flats, first, *contexts[0]);  // a recompute
      walk->done[u] = true;
      BlockKV kv;
      const at::Tensor y =
          unit_forward(config, layout, u, flats, first, *contexts[0], nullptr, continuations ? &kv : nullptr);
      at::NoGradGuard no_grad;
      for (size_t i = 1; i < walk->xs.size(); ++i)
        walk->xs[i] = unit_forward(config, layout, u, flats, walk->xs[i], *contexts[i], &kv);
      return y;
    };
    walk->xs[0] = runner.run(u, walk->xs[0], fn);
  }
  std::vector<at::Tensor> out = std::move(walk->xs);
  walk->xs.clear();
  return out;
}

}  // namespace kto::model
