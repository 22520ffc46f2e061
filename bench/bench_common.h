// Shared by the benchmarks: the Llama shape they time (heads of 64, GQA 2:1, SwiGLU 8/3).
#pragma once

#include <algorithm>
#include <cstdint>

#include "kto/model/model_config.h"

namespace kto::bench {

inline model::ModelConfig llama_config(int64_t hidden, int64_t layers, int64_t vocab) {
  model::ModelConfig c;
  c.arch = kto::model::Arch::llama;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = hidden * 8 / 3 / 16 * 16;
  c.num_hidden_layers = layers;
  c.num_attention_heads = std::max<int64_t>(1, hidden / 64);
  c.num_key_value_heads = std::max<int64_t>(1, hidden / 128);
  c.max_position_embeddings = 4096;
  c.resolve_defaults();
  c.validate("bench");
  return c;
}

}  // namespace kto::bench
