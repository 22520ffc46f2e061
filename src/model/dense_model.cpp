#include "kto/model/dense_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "kto/model/blocks.h"
#include "kto/model/forward.h"
#include "kto/util/check.h"

namespace kto::model {

DenseModel::DenseModel(ModelConfig config, at::ScalarType dtype, at::Device device)
    : config_(std::move(config)), layout_(ModelLayout::build(config_)), dtype_(dtype) {
  for (const UnitLayout& unit : layout_.units) {
    units_.push_back(at::zeros({unit.numel}, at::TensorOptions().dtype(dtype).device(device)));
  }
}

at::Tensor DenseModel::param(const std::string& name) const {
  size_t u = 0, p = 0;
  if (!layout_.locate(name, &u, &p)) throw Error("model has no parameter '" + name + "'");
  const ParamSpec& spec = layout_.units[u].params[p];
  return units_[u].narrow(0, spec.offset, spec.numel).view(spec.shape);
}

void DenseModel::init_random(uint64_t seed, double std) {
  // Drawn in fp64 on the CPU, parameter by parameter in layout order, then cast: the values do
  // not depend on dtype, device or thread count.
  at::Generator gen = at::detail::createCPUGenerator(seed);
  for (size_t u = 0; u < layout_.units.size(); ++u) {
    for (const ParamSpec& p : layout_.units[u].params) {
      at::Tensor values;
      switch (p.role) {
        case Role::ln1_w:
        case Role::ln2_w:
        case Role::norm_w: values = at::ones({p.numel}, at::kDouble); break;
        case Role::ln1_b:
        case Role::ln2_b:
        case Role::norm_b:
        case Role::q_b:
        case Role::k_b:
        case Role::v_b:
        case Role::qkv_b:
        case Role::o_b:
        case Role::gate_b:
        case Role::up_b:
        case Role::down_b: values = at::zeros({p.numel}, at::kDouble); break;
        default: values = at::empty({p.numel}, at::kDouble).normal_(0.0, std, gen);
      }
      units_[u].narrow(0, p.offset, p.numel).copy_(values);
    }
  }
}

DenseModel DenseModel::to(at::ScalarType dtype) const {
  DenseModel out(config_, dtype, units_.front().device());
  for (size_t u = 0; u < units_.size(); ++u) out.units_[u].copy_(units_[u]);
  return out;
}

namespace {

// A dense model's units are all in memory: a unit's buffers are handed out as they are.
class LocalUnits : public UnitRunner {
 public:
  LocalUnits(const ModelLayout& layout, const std::vector<at::Tensor>& units)
      : layout_(layout), units_(units) {}
  at::Tensor run(size_t unit, const at::Tensor& x, const UnitFn& fn) override { return fn(buffers(unit), x); }
  std::vector<at::Tensor> buffers(size_t unit) const {
    std::vector<at::Tensor> flats;
    for (size_t u : layout_.weight_units(unit)) flats.push_back(units_[u]);
    return flats;
  }

 private:
  const ModelLayout& layout_;
  const std::vector<at::Tensor>& units_;
};

}  // namespace

at::Tensor DenseModel::lm_head() const {
  return bind_head(layout_, LocalUnits(layout_, units_).buffers(layout_.units.size() - 1)).lm_head;
}

at::Tensor DenseModel::forward_hidden(const at::Tensor& ids_BT, const at::Tensor& attention_mask_BT,
                                      bool mask_padded_keys) const {
  KTO_CHECK(ids_BT.dim() == 2, "input_ids must be [B, T], got ", ids_BT.sizes());
  const at::Device device = units_.front().device();
  auto context = std::make_shared<ForwardContext>();
  context->attention =
      make_attention_inputs(config_, attention_mask_BT, ids_BT.size(1), dtype_, device, mask_padded_keys);
  LocalUnits runner(layout_, units_);
  return forward_units(config_, layout_, runner, ids_BT.to(device), context);  // no selection: hidden states
}

}  // namespace kto::model
