// Hugging Face checkpoint directories (config.json + *.safetensors) <-> unit flat buffers.
//
// Tensor names are the Hugging Face names (the layout uses them directly), so import and export
// are copies, never renames. Import reads element ranges of a unit's flat buffer, touching only
// the bytes of the parameters that overlap the range: a rank that owns 1/W of a unit reads 1/W
// of its bytes.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kto/io/safetensors.h"
#include "kto/model/dense_model.h"
#include "kto/model/layout.h"
#include "kto/model/model_config.h"

namespace kto::io {

// Checks that `weights` has every parameter of `layout` with its shape and a floating dtype.
// Tensors the model does not use are an error (they mean a different architecture), except
// buffers Hugging Face stores but recomputes (rotary inv_freq, GPT-NeoX attention masks) and a
// stored lm_head of a tied model. Errors name the tensor and the directory.
void check_hf_weights(const SafetensorsSet& weights, const model::ModelLayout& layout);

// Elements [begin, begin + out.numel()) of `unit`'s flat buffer, converted to out's dtype.
// Elements at or past unit.numel (shard padding) are set to zero.
void read_unit_range(const SafetensorsSet& weights, const model::UnitLayout& unit, int64_t begin,
                     at::Tensor& out);

// Loads DIR (config.json + model.safetensors or its sharded index) into a dense model.
model::DenseModel load_hf_model(const std::string& dir, at::ScalarType dtype);

// Writes config.json and the weights (as `dtype`; max_shard_bytes per file). `config_json` is
// the original config.json text to keep (its torch_dtype updated), or empty to generate one.
void save_hf_model(const std::string& dir, const model::ModelConfig& config, const model::ModelLayout& layout,
                   const std::vector<at::Tensor>& units, at::ScalarType dtype,
                   const std::string& config_json = "", int64_t max_shard_bytes = 5ll << 30);

// The content identity of a Hugging Face directory ("sha256 <hex>"): config.json plus the weight
// index (or the single file's safetensors header), which names every tensor, shape and byte range.
std::string hf_directory_identity(const std::string& dir);

// "float32", "bfloat16", ... as Hugging Face's torch_dtype.
std::string hf_dtype_name(at::ScalarType dtype);

}  // namespace kto::io
