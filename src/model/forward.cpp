#include "kto/model/forward.h"

#include <ATen/core/grad_mode.h>

#include "kto/util/check.h"

namespace kto::model {

at::Tensor unit_forward(const ModelConfig& config, const ModelLayout& layout, size_t unit,
                        const std::vector<at::Tensor>& flats, const at::Tensor& x,
                        const ForwardContext& context) {
  const UnitLayout& u = layout.units.at(unit);
  switch (u.kind) {
    case UnitKind::embed: return embed_forward(bind_embed(u, flats.at(0)), x);
    case UnitKind::block: return block_forward(config, bind_block(u, flats.at(0)), x, context.attention);
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
  std::vector<at::Tensor> xs = ids_BT;
  for (size_t u = 0; u < layout.units.size(); ++u) {
    // The runner passes the first input; the others ride along in the same call, without grad.
    const UnitFn fn = [&](const std::vector<at::Tensor>& flats, const at::Tensor& first) {
      {
        at::NoGradGuard no_grad;
        for (size_t i = 1; i < xs.size(); ++i)
          xs[i] = unit_forward(config, layout, u, flats, xs[i], *contexts[i]);
      }
      return unit_forward(config, layout, u, flats, first, *contexts[0]);
    };
    xs[0] = runner.run(u, xs[0], fn);
  }
  return xs;
}

}  // namespace kto::model
