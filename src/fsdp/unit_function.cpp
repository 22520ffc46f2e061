// The autograd side of FSDP: how gradients reach the slices. Private to src/fsdp.
//
// reshard_after_forward (UnitFunction, one node per unit): forward gathers, computes without
// grad and frees; backward gathers again, recomputes the unit with grad, backprops to the
// gathered weights and the unit's input, and reduce-scatters the weight gradient into the
// slice. Only each unit's input activation is kept between forward and backward.
//
// kept (GatherFunction): the gathered buffer is an autograd output whose backward is the
// reduce-scatter; the unit runs under ordinary autograd, which keeps the buffer (and the
// unit's activations) until backward.
#include "unit_function.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kto/util/check.h"

namespace kto::fsdp {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The model travels through autograd contexts as an integer (IValue cannot hold a raw
// pointer); it outlives every graph built from it.
int64_t to_handle(ShardedModel* m) { return reinterpret_cast<int64_t>(m); }
ShardedModel& from_handle(int64_t h) { return *reinterpret_cast<ShardedModel*>(h); }

// Unit to gather next in forward / backward order (-1: none).
int64_t next_in_forward(const ShardedModel& m, size_t u) {
  return u < m.head_unit() ? static_cast<int64_t>(u + 1) : -1;
}
int64_t next_in_backward(size_t u) { return u > 0 ? static_cast<int64_t>(u - 1) : -1; }

std::vector<at::Tensor> gather_for(ShardedModel& m, size_t unit) {
  std::vector<at::Tensor> full{m.gatherer().get(unit)};
  if (unit == m.head_unit() && m.tied()) full.push_back(m.gatherer().get(0));
  return full;
}

class UnitFunction : public torch::autograd::Function<UnitFunction> {
 public:
  // Inputs: the unit's slice, the embedding slice (tied head only, else an empty tensor), the
  // unit's input x, and the run context tensors.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& /*slice: graph edge only*/,
                            const at::Tensor& embed_slice, const at::Tensor& x, at::TensorList context,
                            int64_t model_handle, int64_t unit, int64_t batch, int64_t seq_len) {
    ShardedModel& m = from_handle(model_handle);
    const auto u = static_cast<size_t>(unit);
    const std::vector<at::Tensor> full = gather_for(m, u);
    if (m.options().prefetch && next_in_forward(m, u) >= 0)
      m.gatherer().prefetch(static_cast<size_t>(next_in_forward(m, u)));
    const auto rc = ShardedModel::RunContext::from_list(context.vec(), batch, seq_len);
    at::Tensor y = m.run_unit(u, full, x, rc);
    std::vector<at::Tensor> saved{x};
    for (const at::Tensor& t : context) saved.push_back(t);
    ctx->save_for_backward(saved);
    ctx->saved_data["model"] = model_handle;
    ctx->saved_data["unit"] = unit;
    ctx->saved_data["batch"] = batch;
    ctx->saved_data["seq_len"] = seq_len;
    ctx->saved_data["embed_grad"] = embed_slice.requires_grad();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    ShardedModel& m = from_handle(ctx->saved_data["model"].toInt());
    const auto u = static_cast<size_t>(ctx->saved_data["unit"].toInt());
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const std::vector<at::Tensor> context(saved.begin() + 1, saved.end());
    const auto rc = ShardedModel::RunContext::from_list(context, ctx->saved_data["batch"].toInt(),
                                                        ctx->saved_data["seq_len"].toInt());

    std::vector<at::Tensor> full = gather_for(m, u);
    if (m.options().prefetch && next_in_backward(u) >= 0)
      m.gatherer().prefetch(static_cast<size_t>(next_in_backward(u)));
    // Recompute the unit with grad, then backprop to the gathered weights and the input.
    at::AutoGradMode enable(true);
    std::vector<at::Tensor> leaves;
    for (at::Tensor& f : full) {
      f = f.detach().requires_grad_(true);
      leaves.push_back(f);
    }
    const bool x_differentiable = at::isFloatingType(x.scalar_type());
    at::Tensor x_leaf = x_differentiable ? x.detach().requires_grad_(true) : x;
    if (x_differentiable) leaves.push_back(x_leaf);
    const at::Tensor y = m.run_unit(u, full, x_leaf, rc);
    const variable_list g = torch::autograd::grad({y}, leaves, {grads[0]}, /*retain_graph=*/false,
                                                  /*create_graph=*/false, /*allow_unused=*/true);
    auto to_slice = [&](size_t unit, const at::Tensor& grad) {
      return grad.defined() ? m.gatherer().reduce_scatter(unit, grad, m.shards()[unit].scalar_type())
                            : at::zeros_like(m.shards()[unit]);
    };
    const at::Tensor slice_grad = to_slice(u, g[0]);
    at::Tensor embed_grad;
    if (full.size() == 2) embed_grad = to_slice(0, g[1]);
    const at::Tensor x_grad = x_differentiable ? g.back() : at::Tensor();
    variable_list out{slice_grad, embed_grad, x_grad};
    for (size_t i = 0; i < context.size(); ++i) out.emplace_back();  // context: no gradient
    out.resize(out.size() + 4);                                      // model, unit, batch, seq_len
    return out;
  }
};

class GatherFunction : public torch::autograd::Function<GatherFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& /*slice: graph edge only*/,
                            int64_t model_handle, int64_t unit) {
    ShardedModel& m = from_handle(model_handle);
    ctx->saved_data["model"] = model_handle;
    ctx->saved_data["unit"] = unit;
    at::Tensor full = m.gatherer().get(static_cast<size_t>(unit));
    const int64_t next = next_in_forward(m, static_cast<size_t>(unit));
    if (m.options().prefetch && next >= 0) m.gatherer().prefetch(static_cast<size_t>(next));
    return full;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    ShardedModel& m = from_handle(ctx->saved_data["model"].toInt());
    const auto u = static_cast<size_t>(ctx->saved_data["unit"].toInt());
    return {m.gatherer().reduce_scatter(u, grads[0], m.shards()[u].scalar_type()), at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

at::Tensor forward_resharded(ShardedModel& m, const at::Tensor& ids, const ShardedModel::RunContext& ctx) {
  const std::vector<at::Tensor> context = ctx.as_list();
  const at::Tensor none = at::empty({0}, m.shards()[0].options().requires_grad(false));
  at::Tensor x = ids;
  for (size_t u = 0; u <= m.head_unit(); ++u) {
    const at::Tensor& embed = (u == m.head_unit() && m.tied()) ? m.shards()[0] : none;
    x = UnitFunction::apply(m.shards()[u], embed, x, context, to_handle(&m), static_cast<int64_t>(u),
                            ctx.batch, ctx.seq_len);
  }
  return x;
}

at::Tensor forward_kept(ShardedModel& m, const at::Tensor& ids, const ShardedModel::RunContext& ctx) {
  at::Tensor x = ids;
  at::Tensor embed_full;
  for (size_t u = 0; u <= m.head_unit(); ++u) {
    const at::Tensor full = GatherFunction::apply(m.shards()[u], to_handle(&m), static_cast<int64_t>(u));
    std::vector<at::Tensor> fulls{full};
    if (u == 0) embed_full = full;
    if (u == m.head_unit() && m.tied()) fulls.push_back(embed_full);  // one buffer, gradients add up
    x = m.run_unit(u, fulls, x, ctx);
  }
  return x;
}

}  // namespace kto::fsdp
