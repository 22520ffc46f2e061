// How a model's parameters live in memory: one flat buffer per unit.
//
// Units are the embedding, each decoder block and the head (final norm + LM head); each unit's
// parameters are laid out back to back in a fixed order (llm.c's ParameterTensors idea), so
// loading, sharding and checkpointing are the same operation for every family: a unit is a
// list of (Hugging Face name, shape, offset) and a flat buffer. Within a block, q/k/v weights
// (and biases) are adjacent, as are the gate/up weights, so each group is one contiguous view
// and one matmul.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kto/model/model_config.h"

namespace kto::model {

// What a parameter is, independent of the family's naming.
enum class Role {
  embed,  // [V, C]
  ln1_w,
  ln1_b,  // pre-attention norm
  q_w,
  k_w,
  v_w,  // separate projections (llama, mistral, qwen2)
  q_b,
  k_b,
  v_b,
  qkv_w,
  qkv_b,  // fused per head as [q k v] (gpt_neox)
  o_w,
  o_b,
  ln2_w,
  ln2_b,  // pre-MLP norm
  gate_w,
  up_w,  // gated MLP (SwiGLU): gate and up adjacent
  gate_b,
  up_b,
  down_w,
  down_b,
  norm_w,
  norm_b,   // final norm
  lm_head,  // [V, C]; absent when tied to the embedding
};

struct ParamSpec {
  std::string name;  // Hugging Face tensor name
  Role role;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // elements from the start of the unit's flat buffer
  int64_t numel = 0;
};

enum class UnitKind { embed, block, head };

struct UnitLayout {
  std::string name;  // "embed", "layers.3", "head"
  UnitKind kind = UnitKind::block;
  int layer = -1;  // block index, -1 for embed/head
  std::vector<ParamSpec> params;
  int64_t numel = 0;

  const ParamSpec* find(Role role) const;
  const ParamSpec& at(Role role) const;  // throws if absent
};

struct ModelLayout {
  std::vector<UnitLayout> units;  // embed, layers.0 .. layers.N-1, head
  int64_t numel = 0;              // all units

  static ModelLayout build(const ModelConfig& config);
  const UnitLayout& embed() const { return units.front(); }
  const UnitLayout& block(int layer) const { return units[static_cast<size_t>(layer) + 1]; }
  const UnitLayout& head() const { return units.back(); }
  int num_blocks() const { return static_cast<int>(units.size()) - 2; }
  // The unit and parameter holding Hugging Face tensor `name`; false when none does.
  bool locate(const std::string& name, size_t* unit, size_t* param) const;
  // The head has no LM head matrix of its own: it uses the embedding (tie_word_embeddings).
  bool tied_head() const { return head().find(Role::lm_head) == nullptr; }
  // The units whose flat buffers unit `unit` binds, in order: the unit itself, and for a tied
  // head the embedding too. The one place a tied head is special.
  std::vector<size_t> weight_units(size_t unit) const {
    if (unit + 1 == units.size() && tied_head()) return {unit, 0};
    return {unit};
  }
};

}  // namespace kto::model
