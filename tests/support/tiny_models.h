// Tiny model configurations and the Hugging Face reference cases, shared by the model tests.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "kto/io/safetensors.h"
#include "kto/model/model_config.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "test_support.h"

namespace kto::test {

// A 2-block model of `arch` (llama, mistral, qwen2, gpt_neox): 4 heads over 2 kv heads (GPT-NeoX:
// 4, with half its head dims rotated, GELU, parallel residual and biases), vocabulary 61.
inline model::ModelConfig tiny_config(const std::string& arch) {
  model::ModelConfig c;
  c.arch = *parse_choice(model::kArchs, arch);
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = arch == "gpt_neox" ? 4 : 2;
  c.max_position_embeddings = 64;
  if (arch == "gpt_neox") {
    c.partial_rotary_factor = 0.5;
    c.hidden_act = model::Activation::gelu;
    c.parallel_residual = true;
    c.attention_bias = true;
  }
  c.resolve_defaults();
  c.validate("tiny");
  return c;
}

// Calls fn(name, case_dir, reference) for every case of the Hugging Face reference set
// (tests/fixtures/hf_models, or $KTO_HF_CASES: a directory with index.json in that format).
template <typename Fn>
void for_each_hf_case(Fn&& fn) {
  const std::string dir = env_or("KTO_HF_CASES", fixtures_dir() + "/hf_models");
  const nlohmann::json index = nlohmann::json::parse(read_text_file(dir + "/index.json"));
  if (!index.contains("cases") || index["cases"].empty()) throw Error(dir + "/index.json: no cases");
  for (auto it = index["cases"].begin(); it != index["cases"].end(); ++it) {
    const std::string case_dir = dir + "/" + it.value()["dir"].get<std::string>();
    fn(it.key(), case_dir, io::SafetensorsSet::open_file(case_dir + "/reference.safetensors"));
  }
}

}  // namespace kto::test
