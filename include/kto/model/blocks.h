// The decoder as functions of explicit weight tensors (DESIGN §4).
//
// Every function takes the weights of one unit as views into that unit's flat buffer (see
// layout.h) and knows nothing about where those views came from: a dense model, a gathered
// shard, a checkpoint. Sharding is applied from outside (kto/fsdp), never in here.
//
// Precision: activations run in the weights' dtype (fp32, bf16, fp64). Norm statistics,
// attention softmax and RoPE tables are computed in fp32 for bf16/fp16 and in the run's dtype
// otherwise (fp64 runs are fp64 throughout — Hugging Face's "strict" double semantics).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "kto/model/layout.h"
#include "kto/model/model_config.h"
#include "kto/model/packing.h"

namespace kto::model {

struct EmbedWeights {
  at::Tensor table;  // [V, C]
};

struct BlockWeights {
  at::Tensor ln1_w, ln1_b, ln2_w, ln2_b;  // biases undefined for RMSNorm
  // llama family: rows [q (H*D); k (Hkv*D); v (Hkv*D)]; gpt_neox: per head [q k v] (H * 3D rows)
  at::Tensor qkv_w, qkv_b;
  at::Tensor o_w, o_b;
  // gated MLP: rows [gate (I); up (I)]; gpt_neox: dense_h_to_4h (I rows)
  at::Tensor up_w, up_b;
  at::Tensor down_w, down_b;
};

struct HeadWeights {
  at::Tensor norm_w, norm_b;
  at::Tensor lm_head;  // [V, C]: the head's own, or the embedding's when tied
};

EmbedWeights bind_embed(const UnitLayout& unit, const at::Tensor& flat);
BlockWeights bind_block(const UnitLayout& unit, const at::Tensor& flat);
// `flats`: the buffers of layout.weight_units(head) — the head's, and the embedding's when tied.
HeadWeights bind_head(const ModelLayout& layout, const std::vector<at::Tensor>& flats);

// Per-forward attention context shared by all blocks.
struct AttentionInputs {
  at::Tensor cos, sin;  // [T, rotary_dim] in the compute dtype
  // Additive masks (0 = attend, large negative = masked), in the dtype scores are computed in:
  at::Tensor causal_TT;     // causal and sliding-window structure, [T, T] (a view into a cached table)
  at::Tensor keys_B11T;     // padded keys; undefined when no row needs it (right padding only)
  bool causal_only = true;  // plain causal: no window, no key mask (fused kernels may be used)

  // Packed batches (packing.h; x is [1, N, C]); `packed` empty for a padded batch. cos and sin
  // are then [N, R], at each token's position; causal_TT and keys_B11T are unused.
  std::vector<PackedGroup> packed;
  // Per group, the additive mask of its queries [L] over its keys [prefix_length + L]: a view
  // into the cached causal table, or built for a group with branches.
  std::vector<at::Tensor> group_masks;
  std::vector<bool> group_causal;  // plain causal group (no prefix, branches or window)
};

// `attention_mask_BT` is 1 for real tokens and 0 for padding (undefined: no padding); it must
// be a CPU tensor (it is inspected on the host, then moved to `device`). Positions are 0..T-1
// for every row, as Hugging Face does for right-padded batches.
//
// With right padding, real positions never see padded keys, so by default no key mask is built
// (cheaper, and fused causal kernels apply); outputs at padded positions are then not those
// Hugging Face returns. `mask_padded_keys` builds the key mask anyway, so that every position,
// padded ones included, matches Hugging Face (for comparison tools).
AttentionInputs make_attention_inputs(const ModelConfig& config, const at::Tensor& attention_mask_BT,
                                      int64_t seq_len, at::ScalarType dtype, at::Device device,
                                      bool mask_padded_keys = false);

// The attention inputs of a packed batch (packing.h), built on the host once per forward.
AttentionInputs make_packed_attention_inputs(const ModelConfig& config, const PackedLayout& layout,
                                             at::ScalarType dtype, at::Device device);

// RoPE inverse frequencies [rotary_dim / 2] in fp64, with rope_scaling applied.
at::Tensor rope_inv_freq(const ModelConfig& config);

at::Tensor embed_forward(const EmbedWeights& w, const at::Tensor& ids_BT);
// With `kv_out`, the block also leaves its keys and values there (detached) for the
// continuations of a packed batch; `prefix` gives a continuation those of its provider.
at::Tensor block_forward(const ModelConfig& config, const BlockWeights& w, const at::Tensor& x_BTC,
                         const AttentionInputs& attn, const BlockKV* prefix = nullptr,
                         BlockKV* kv_out = nullptr);
at::Tensor head_norm_forward(const ModelConfig& config, const HeadWeights& w, const at::Tensor& x_BTC);

}  // namespace kto::model
