// An unsharded model: the whole of every unit's flat buffer in this process.
//
// The plain reference the sharded path is checked against (llm.c's "slow, obviously correct
// reference beside the fast path"), and what single-process tools (kto-ckpt forward) run.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kto/model/layout.h"
#include "kto/model/model_config.h"

namespace kto::model {

class DenseModel {
 public:
  // Zero-filled flat buffers of `dtype` on `device`.
  DenseModel(ModelConfig config, at::ScalarType dtype, at::Device device = at::kCPU);

  const ModelConfig& config() const { return config_; }
  const ModelLayout& layout() const { return layout_; }
  at::ScalarType dtype() const { return dtype_; }
  // One flat buffer per unit (embed, layers..., head), in layout order.
  std::vector<at::Tensor>& units() { return units_; }
  const std::vector<at::Tensor>& units() const { return units_; }
  // A view of Hugging Face tensor `name`; throws kto::Error when the model has none.
  at::Tensor param(const std::string& name) const;

  // Deterministic initialisation: weight matrices and embeddings ~ N(0, std), norm weights 1,
  // biases 0. The same seed gives the same weights on every machine and dtype.
  void init_random(uint64_t seed, double std = 0.02);
  // A copy in another dtype.
  DenseModel to(at::ScalarType dtype) const;

  // Final-normed hidden states [B, T, C]. attention_mask_BT: CPU, 1 = token, 0 = padding
  // (undefined = no padding). `mask_padded_keys`: see make_attention_inputs.
  at::Tensor forward_hidden(const at::Tensor& ids_BT, const at::Tensor& attention_mask_BT,
                            bool mask_padded_keys = false) const;
  // The LM head matrix [V, C]: lm_head, or the embedding when tied.
  at::Tensor lm_head() const;

 private:
  ModelConfig config_;
  ModelLayout layout_;
  at::ScalarType dtype_;
  std::vector<at::Tensor> units_;
};

}  // namespace kto::model
