#include "runners.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/engine.h>

#include <map>

#include "kto/util/check.h"

namespace kto::fsdp {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The full buffers unit `unit` binds (its own, and the embedding's for a tied head); then the
// all-gather of `next` (the unit that runs after it) is put in flight.
std::vector<at::Tensor> gather_unit(UnitGatherer& g, size_t unit, int64_t next) {
  std::vector<at::Tensor> full;
  for (size_t u : g.layout().weight_units(unit)) full.push_back(g.get(u));
  if (g.prefetching() && next >= 0 && next < static_cast<int64_t>(g.layout().units.size()))
    g.prefetch(static_cast<size_t>(next));
  return full;
}

// From a backward node: the unit's gradient goes out asynchronously, and the slices' .grad
// are complete when this backward pass ends (an engine callback lands what is still in flight;
// queued on every call, it is a no-op once the first one has run).
void reduce_scatter_in_backward(UnitGatherer& g, size_t unit, const at::Tensor& full_grad) {
  g.reduce_scatter_grad(unit, full_grad);
  torch::autograd::Engine::get_default_engine().queue_callback([&g] { g.finish_gradients(); });
}

// What an autograd node needs again in backward, carried in its context as a typed capsule.
// The gatherer belongs to the sharded model, which outlives every graph built from it.
struct UnitCall : torch::CustomClassHolder {
  UnitCall(UnitGatherer* g, size_t u, model::UnitFn f) : gatherer(g), unit(u), fn(std::move(f)) {}
  UnitGatherer* gatherer;
  size_t unit;
  model::UnitFn fn;  // the unit bound to its forward's context (empty for a plain gather)
};

c10::intrusive_ptr<UnitCall> call_of(AutogradContext* ctx) {
  return c10::static_intrusive_pointer_cast<UnitCall>(ctx->saved_data["call"].toCapsule());
}

class NoGradRunner : public model::UnitRunner {
 public:
  explicit NoGradRunner(UnitGatherer& g) : g_(g) {}
  at::Tensor run(size_t unit, const at::Tensor& x, const model::UnitFn& fn) override {
    at::NoGradGuard no_grad;
    return fn(gather_unit(g_, unit, static_cast<int64_t>(unit) + 1), x);  // buffers freed on return
  }

 private:
  UnitGatherer& g_;
};

// Kept units: the gathered buffer is the output of a gather whose backward is the reduce-scatter.
class GatherFunction : public torch::autograd::Function<GatherFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& /*slice: graph edge only*/,
                            c10::intrusive_ptr<UnitCall> call) {
    at::Tensor full = call->gatherer->get(call->unit);
    const size_t next = call->unit + 1;
    if (call->gatherer->prefetching() && next < call->gatherer->layout().units.size())
      call->gatherer->prefetch(next);
    ctx->saved_data["call"] = at::IValue::make_capsule(std::move(call));
    return full;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto call = call_of(ctx);
    reduce_scatter_in_backward(*call->gatherer, call->unit, grads[0]);
    return {at::Tensor(), at::Tensor()};  // the slice's gradient lands outside autograd
  }
};

class KeptRunner : public model::UnitRunner {
 public:
  explicit KeptRunner(UnitGatherer& g) : g_(g) {}
  at::Tensor run(size_t unit, const at::Tensor& x, const model::UnitFn& fn) override {
    std::vector<at::Tensor> flats;
    for (size_t u : g_.layout().weight_units(unit)) {
      auto it = gathered_.find(u);  // a tied head reuses the embedding's buffer: gradients add up
      if (it == gathered_.end())
        it = gathered_
                 .emplace(u,
                          GatherFunction::apply(g_.slice(u), c10::make_intrusive<UnitCall>(&g_, u, nullptr)))
                 .first;
      flats.push_back(it->second);
    }
    return fn(flats, x);
  }

 private:
  UnitGatherer& g_;
  std::map<size_t, at::Tensor> gathered_;  // this forward's buffers (autograd keeps them anyway)
};

// Resharded units: one node per unit; forward keeps only the unit's input.
class UnitFunction : public torch::autograd::Function<UnitFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, at::TensorList /*slices: graph edges only*/,
                            const at::Tensor& x, c10::intrusive_ptr<UnitCall> call) {
    const at::Tensor y =
        call->fn(gather_unit(*call->gatherer, call->unit, static_cast<int64_t>(call->unit) + 1), x);
    ctx->save_for_backward({x});
    ctx->saved_data["call"] = at::IValue::make_capsule(std::move(call));
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto call = call_of(ctx);
    UnitGatherer& g = *call->gatherer;
    const at::Tensor x = ctx->get_saved_variables()[0];
    std::vector<at::Tensor> full = gather_unit(g, call->unit, static_cast<int64_t>(call->unit) - 1);
    // Recompute the unit with grad, then backprop to the gathered weights and the input.
    at::AutoGradMode enable(true);
    std::vector<at::Tensor> leaves;
    for (at::Tensor& f : full) {
      f = f.detach().requires_grad_(true);
      leaves.push_back(f);
    }
    const bool x_differentiable = at::isFloatingType(x.scalar_type());  // the embedding's input is ids
    const at::Tensor x_leaf = x_differentiable ? x.detach().requires_grad_(true) : x;
    if (x_differentiable) leaves.push_back(x_leaf);
    const at::Tensor y = call->fn(full, x_leaf);
    const variable_list d = torch::autograd::grad({y}, leaves, {grads[0]}, /*retain_graph=*/false,
                                                  /*create_graph=*/false, /*allow_unused=*/true);
    const std::vector<size_t> units = g.layout().weight_units(call->unit);
    variable_list out;
    for (size_t i = 0; i < units.size(); ++i) {
      // An unused weight buffer still gets its (zero) gradient, as every rank's does.
      reduce_scatter_in_backward(g, units[i], d[i].defined() ? d[i] : at::zeros_like(full[i]));
      out.emplace_back();  // the slices' gradients land outside autograd
    }
    out.push_back(x_differentiable ? d.back() : at::Tensor());
    out.emplace_back();  // the call
    return out;
  }
};

class ReshardedRunner : public model::UnitRunner {
 public:
  explicit ReshardedRunner(UnitGatherer& g) : g_(g) {}
  at::Tensor run(size_t unit, const at::Tensor& x, const model::UnitFn& fn) override {
    std::vector<at::Tensor> slices;
    for (size_t u : g_.layout().weight_units(unit)) slices.push_back(g_.slice(u));
    return UnitFunction::apply(at::TensorList(slices), x, c10::make_intrusive<UnitCall>(&g_, unit, fn));
  }

 private:
  UnitGatherer& g_;
};

}  // namespace

std::unique_ptr<model::UnitRunner> make_runner(RunMode mode, UnitGatherer& gatherer) {
  switch (mode) {
    case RunMode::no_grad: return std::make_unique<NoGradRunner>(gatherer);
    case RunMode::kept: return std::make_unique<KeptRunner>(gatherer);
    case RunMode::resharded: return std::make_unique<ReshardedRunner>(gatherer);
  }
  KTO_CHECK(false, "unknown run mode");
}

}  // namespace kto::fsdp
