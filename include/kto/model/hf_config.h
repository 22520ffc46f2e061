// Hugging Face config.json <-> ModelConfig.
//
// Each family's key names (Llama/Mistral/Qwen2 vs GPT-NeoX spellings, rope_scaling forms,
// eos lists) map onto ModelConfig. Keys that change the computation in ways kto does not
// implement (an unknown rope_scaling type, Qwen2 use_sliding_window, an unknown activation, an
// unsupported model_type) are errors naming the key and the file; purely informational keys are
// ignored.
#pragma once

#include <string>

#include "kto/model/model_config.h"

namespace kto::model {

// Parses config.json text; `source` names the file in error messages. The result is resolved
// and validated.
ModelConfig parse_hf_config(const std::string& json_text, const std::string& source);
// Reads DIR/config.json.
ModelConfig read_hf_config(const std::string& dir);
// A config.json for `config` that Hugging Face transformers loads (`torch_dtype` as given,
// e.g. "float32" or "bfloat16").
std::string hf_config_json(const ModelConfig& config, const std::string& torch_dtype);
// `json_text` (an existing config.json) with "torch_dtype" replaced; other keys unchanged.
std::string hf_config_with_dtype(const std::string& json_text, const std::string& torch_dtype);

}  // namespace kto::model
