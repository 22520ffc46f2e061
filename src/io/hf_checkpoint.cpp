#include "kto/io/hf_checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "kto/model/hf_config.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/log.h"
#include "kto/util/sha256.h"

namespace kto::io {
namespace {

using detail::str_cat;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Buffers that Hugging Face writes into some checkpoints but recomputes on load.
bool is_recomputed_buffer(const std::string& name) {
  return ends_with(name, ".rotary_emb.inv_freq") || ends_with(name, ".attention.bias") ||
         ends_with(name, ".attention.masked_bias");
}

bool is_floating(DType d) {
  return d == DType::F64 || d == DType::F32 || d == DType::F16 || d == DType::BF16;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

}  // namespace

std::string hf_dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    default: throw Error(str_cat("no Hugging Face torch_dtype for ", c10::toString(dtype)));
  }
}

void check_hf_weights(const SafetensorsSet& weights, const model::ModelLayout& layout) {
  for (const model::UnitLayout& unit : layout.units) {
    for (const model::ParamSpec& p : unit.params) {
      const TensorInfo* info = weights.find(p.name);
      if (info == nullptr) throw Error(str_cat(weights.source(), ": missing tensor '", p.name, "'"));
      if (info->shape != p.shape) {
        throw Error(str_cat(weights.source(), ": tensor '", p.name, "' has shape ", shape_text(info->shape),
                            ", config.json implies ", shape_text(p.shape)));
      }
      if (!is_floating(info->dtype)) {
        throw Error(str_cat(weights.source(), ": tensor '", p.name, "' has dtype ", dtype_name(info->dtype),
                            ", expected a floating type"));
      }
    }
  }
  std::vector<std::string> unexpected;
  size_t u = 0, p = 0;
  for (const std::string& name : weights.names()) {
    if (layout.locate(name, &u, &p) || is_recomputed_buffer(name)) continue;
    if (name == "lm_head.weight" || name == "embed_out.weight") continue;  // stored although tied
    unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    std::string list;
    for (size_t i = 0; i < std::min<size_t>(unexpected.size(), 5); ++i)
      list += (i ? ", " : "") + unexpected[i];
    if (unexpected.size() > 5) list += str_cat(", ... (", unexpected.size(), " in all)");
    throw Error(str_cat(weights.source(), ": tensors the configured architecture does not have: ", list,
                        " (does config.json match the weights?)"));
  }
}

void read_unit_range(const SafetensorsSet& weights, const model::UnitLayout& unit, int64_t begin,
                     at::Tensor& out) {
  KTO_CHECK(out.dim() == 1 && out.is_contiguous(), "read_unit_range needs a contiguous 1-D output");
  const int64_t end = begin + out.numel();
  for (const model::ParamSpec& p : unit.params) {
    const int64_t lo = std::max(begin, p.offset);
    const int64_t hi = std::min(end, p.offset + p.numel);
    if (lo >= hi) continue;
    const at::Tensor values = weights.read_range(p.name, lo - p.offset, hi - lo);
    out.narrow(0, lo - begin, hi - lo).copy_(values);
  }
  if (end > unit.numel) {
    const int64_t pad_from = std::max(begin, unit.numel);
    out.narrow(0, pad_from - begin, end - pad_from).zero_();
  }
}

model::DenseModel load_hf_model(const std::string& dir, at::ScalarType dtype) {
  const model::ModelConfig config = model::read_hf_config(dir);
  const SafetensorsSet weights = SafetensorsSet::open_dir(dir);
  model::DenseModel m(config, dtype);
  check_hf_weights(weights, m.layout());
  for (size_t u = 0; u < m.units().size(); ++u)
    read_unit_range(weights, m.layout().units[u], 0, m.units()[u]);
  log::info("io", "loaded ", dir, ": ", model::name(config.arch), ", ", config.num_parameters(),
            " parameters as ", c10::toString(dtype));
  return m;
}

void save_hf_model(const std::string& dir, const model::ModelConfig& config, const model::ModelLayout& layout,
                   const std::vector<at::Tensor>& units, at::ScalarType dtype, const std::string& config_json,
                   int64_t max_shard_bytes) {
  KTO_CHECK(units.size() == layout.units.size(), "save_hf_model: ", units.size(), " buffers for ",
            layout.units.size(), " units");
  NamedTensors tensors;
  for (size_t u = 0; u < units.size(); ++u) {
    for (const model::ParamSpec& p : layout.units[u].params) {
      tensors.emplace_back(p.name, units[u].narrow(0, p.offset, p.numel).view(p.shape).to(dtype));
    }
  }
  make_directories(dir);
  write_safetensors_dir(dir, tensors, max_shard_bytes, {{"format", "pt"}});
  const std::string torch_dtype = hf_dtype_name(dtype);
  write_text_file(join_path(dir, "config.json"), config_json.empty()
                                                     ? model::hf_config_json(config, torch_dtype)
                                                     : model::hf_config_with_dtype(config_json, torch_dtype));
}

std::string hf_directory_identity(const std::string& dir) {
  std::string text = read_text_file(join_path(dir, "config.json"));
  const std::string index = join_path(dir, "model.safetensors.index.json");
  if (path_exists(index)) {
    text += read_text_file(index);
  } else {
    // The header only: 8 bytes of length, then the JSON (the file may be many gigabytes).
    const std::string file = join_path(dir, "model.safetensors");
    std::ifstream in(file, std::ios::binary | std::ios::ate);
    if (!in) throw Error(file + ": cannot open");
    const auto size = static_cast<uint64_t>(std::max<std::streamoff>(0, in.tellg()));
    in.seekg(0);
    std::string header(8, '\0');
    in.read(header.data(), 8);
    uint64_t n = 0;
    if (in.gcount() == 8) std::memcpy(&n, header.data(), 8);
    header.resize(static_cast<size_t>(8 + std::min<uint64_t>(n, size > 8 ? size - 8 : 0)));
    in.read(header.data() + 8, static_cast<std::streamsize>(header.size() - 8));
    header.resize(8 + static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
    text += header;
  }
  return "sha256 " + sha256_hex(text.data(), text.size());
}

}  // namespace kto::io
