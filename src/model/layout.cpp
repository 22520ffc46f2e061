#include "kto/model/layout.h"

#include "kto/util/check.h"

namespace kto::model {

using detail::str_cat;

const ParamSpec* UnitLayout::find(Role role) const {
  for (const ParamSpec& p : params) {
    if (p.role == role) return &p;
  }
  return nullptr;
}

const ParamSpec& UnitLayout::at(Role role) const {
  const ParamSpec* p = find(role);
  KTO_CHECK(p != nullptr, "unit ", name, " has no parameter of role ", static_cast<int>(role));
  return *p;
}

namespace {

class UnitBuilder {
 public:
  UnitBuilder(std::string name, UnitKind kind, int layer, std::string prefix) : prefix_(std::move(prefix)) {
    unit_.name = std::move(name);
    unit_.kind = kind;
    unit_.layer = layer;
  }
  void add(const std::string& local_name, Role role, std::vector<int64_t> shape) {
    ParamSpec p;
    p.name = prefix_ + local_name;
    p.role = role;
    p.numel = 1;
    for (int64_t d : shape) p.numel *= d;
    p.shape = std::move(shape);
    p.offset = unit_.numel;
    unit_.numel += p.numel;
    unit_.params.push_back(std::move(p));
  }
  UnitLayout take() { return std::move(unit_); }

 private:
  std::string prefix_;
  UnitLayout unit_;
};

UnitLayout llama_block(const ModelConfig& c, int layer) {
  const int64_t C = c.hidden_size, I = c.intermediate_size;
  const int64_t q = c.num_attention_heads * c.head_size(), kv = c.kv_heads() * c.head_size();
  UnitBuilder b(str_cat("layers.", layer), UnitKind::block, layer, str_cat("model.layers.", layer, "."));
  b.add("input_layernorm.weight", Role::ln1_w, {C});
  b.add("self_attn.q_proj.weight", Role::q_w, {q, C});
  b.add("self_attn.k_proj.weight", Role::k_w, {kv, C});
  b.add("self_attn.v_proj.weight", Role::v_w, {kv, C});
  if (c.qkv_bias()) {
    b.add("self_attn.q_proj.bias", Role::q_b, {q});
    b.add("self_attn.k_proj.bias", Role::k_b, {kv});
    b.add("self_attn.v_proj.bias", Role::v_b, {kv});
  }
  b.add("self_attn.o_proj.weight", Role::o_w, {C, q});
  if (c.out_bias()) b.add("self_attn.o_proj.bias", Role::o_b, {C});
  b.add("post_attention_layernorm.weight", Role::ln2_w, {C});
  b.add("mlp.gate_proj.weight", Role::gate_w, {I, C});
  b.add("mlp.up_proj.weight", Role::up_w, {I, C});
  if (c.mlp_bias) {
    b.add("mlp.gate_proj.bias", Role::gate_b, {I});
    b.add("mlp.up_proj.bias", Role::up_b, {I});
  }
  b.add("mlp.down_proj.weight", Role::down_w, {C, I});
  if (c.mlp_bias) b.add("mlp.down_proj.bias", Role::down_b, {C});
  return b.take();
}

UnitLayout neox_block(const ModelConfig& c, int layer) {
  const int64_t C = c.hidden_size, I = c.intermediate_size;
  UnitBuilder b(str_cat("layers.", layer), UnitKind::block, layer, str_cat("gpt_neox.layers.", layer, "."));
  b.add("input_layernorm.weight", Role::ln1_w, {C});
  b.add("input_layernorm.bias", Role::ln1_b, {C});
  b.add("attention.query_key_value.weight", Role::qkv_w, {3 * C, C});
  if (c.qkv_bias()) b.add("attention.query_key_value.bias", Role::qkv_b, {3 * C});
  b.add("attention.dense.weight", Role::o_w, {C, C});
  if (c.out_bias()) b.add("attention.dense.bias", Role::o_b, {C});
  b.add("post_attention_layernorm.weight", Role::ln2_w, {C});
  b.add("post_attention_layernorm.bias", Role::ln2_b, {C});
  b.add("mlp.dense_h_to_4h.weight", Role::up_w, {I, C});
  b.add("mlp.dense_h_to_4h.bias", Role::up_b, {I});
  b.add("mlp.dense_4h_to_h.weight", Role::down_w, {C, I});
  b.add("mlp.dense_4h_to_h.bias", Role::down_b, {C});
  return b.take();
}

}  // namespace

ModelLayout ModelLayout::build(const ModelConfig& c) {
  const bool neox = c.arch == Arch::gpt_neox;
  const int64_t V = c.vocab_size, C = c.hidden_size;
  ModelLayout layout;

  UnitBuilder embed("embed", UnitKind::embed, -1, "");
  embed.add(neox ? "gpt_neox.embed_in.weight" : "model.embed_tokens.weight", Role::embed, {V, C});
  layout.units.push_back(embed.take());

  for (int layer = 0; layer < c.num_hidden_layers; ++layer) {
    layout.units.push_back(neox ? neox_block(c, layer) : llama_block(c, layer));
  }

  UnitBuilder head("head", UnitKind::head, -1, "");
  if (neox) {
    head.add("gpt_neox.final_layer_norm.weight", Role::norm_w, {C});
    head.add("gpt_neox.final_layer_norm.bias", Role::norm_b, {C});
    if (!c.tie_word_embeddings) head.add("embed_out.weight", Role::lm_head, {V, C});
  } else {
    head.add("model.norm.weight", Role::norm_w, {C});
    if (!c.tie_word_embeddings) head.add("lm_head.weight", Role::lm_head, {V, C});
  }
  layout.units.push_back(head.take());

  for (const UnitLayout& u : layout.units) layout.numel += u.numel;
  return layout;
}

bool ModelLayout::locate(const std::string& name, size_t* unit, size_t* param) const {
  for (size_t u = 0; u < units.size(); ++u) {
    for (size_t p = 0; p < units[u].params.size(); ++p) {
      if (units[u].params[p].name == name) {
        *unit = u;
        *param = p;
        return true;
      }
    }
  }
  return false;
}

}  // namespace kto::model
