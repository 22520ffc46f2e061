#include "kto/model/dense_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "kto/model/blocks.h"
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

at::Tensor DenseModel::lm_head() const {
  const HeadWeights head = bind_head(layout_.head(), units_.back());
  return head.lm_head.defined() ? head.lm_head : bind_embed(layout_.embed(), units_.front()).table;
}

at::Tensor DenseModel::forward_hidden(const at::Tensor& ids_BT, const at::Tensor& attention_mask_BT,
                                      bool mask_padded_keys) const {
  KTO_CHECK(ids_BT.dim() == 2, "input_ids must be [B, T], got ", ids_BT.sizes());
  const at::Device device = units_.front().device();
  const AttentionInputs attn =
      make_attention_inputs(config_, attention_mask_BT, ids_BT.size(1), dtype_, device, mask_padded_keys);
  at::Tensor x = embed_forward(bind_embed(layout_.embed(), units_.front()), ids_BT.to(device));
  for (int layer = 0; layer < layout_.num_blocks(); ++layer) {
    x = block_forward(config_, bind_block(layout_.block(layer), units_[static_cast<size_t>(layer) + 1]), x,
                      attn);
  }
  return head_norm_forward(config_, bind_head(layout_.head(), units_.back()), x);
}

}  // namespace kto::model
