#include "kto/model/hf_config.h"

#include <nlohmann/json.hpp>
#include <optional>

#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/json.h"

namespace kto::model {
namespace {

using detail::str_cat;
using json = nlohmann::json;

// Typed access to config.json keys with errors naming the key and the file.
class Keys {
 public:
  Keys(const json& root, std::string source) : root_(root), source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ConfigError(str_cat(source_, ": key '", key, "': ", what));
  }
  bool has(const std::string& key) const {
    auto it = root_.find(key);
    return it != root_.end() && !it->is_null();
  }
  int64_t integer(const std::string& key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const json& v = root_.at(key);
    if (!v.is_number_integer()) fail(key, "expected an integer, got " + json_brief(v));
    return v.get<int64_t>();
  }
  int64_t required_integer(const std::string& key) const {
    if (!has(key)) fail(key, "missing (required)");
    return integer(key, 0);
  }
  double number(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = root_.at(key);
    if (!v.is_number()) fail(key, "expected a number, got " + json_brief(v));
    return v.get<double>();
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = root_.at(key);
    if (!v.is_boolean()) fail(key, "expected true or false, got " + json_brief(v));
    return v.get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = root_.at(key);
    if (!v.is_string()) fail(key, "expected a string, got " + json_brief(v));
    return v.get<std::string>();
  }
  // Token ids may be an integer or a list (Llama 3 lists several EOS ids): the first is kept.
  int64_t token_id(const std::string& key) const {
    if (!has(key)) return -1;
    const json& v = root_.at(key);
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
    if (v.is_array() && v.empty()) return -1;
    fail(key, "expected a token id or a list of ids, got " + json_brief(v));
  }
  const json& root() const { return root_; }
  const std::string& source() const { return source_; }

 private:
  const json& root_;
  std::string source_;
};

void parse_rope_scaling(const Keys& keys, RopeScaling& out) {
  if (!keys.has("rope_scaling")) return;
  const json& rs = keys.root().at("rope_scaling");
  if (!rs.is_object()) keys.fail("rope_scaling", "expected an object or null, got " + json_brief(rs));
  Keys sub(rs, keys.source());
  // Newer configs say "rope_type", older ones "type".
  const std::string type = sub.string("rope_type", sub.string("type", "default"));
  if (type == "default") return;
  const std::optional<RopeType> parsed = parse_choice(kRopeTypes, type);
  if (!parsed || *parsed == RopeType::none) {
    keys.fail("rope_scaling",
              "rope type '" + type + "' is not supported (supported: default, linear, llama3)");
  }
  out.type = *parsed;
  out.factor = sub.number("factor", 1.0);
  if (out.type == RopeType::llama3) {
    out.low_freq_factor = sub.number("low_freq_factor", 1.0);
    out.high_freq_factor = sub.number("high_freq_factor", 4.0);
    out.original_max_position_embeddings = sub.integer("original_max_position_embeddings", 8192);
  }
}

}  // namespace

ModelConfig parse_hf_config(const std::string& json_text, const std::string& source) {
  json root;
  try {
    root = parse_json(json_text, source);
  } catch (const Error& e) {
    throw ConfigError(e.what());
  }
  if (!root.is_object()) throw ConfigError(source + ": expected a JSON object");
  Keys keys(root, source);

  ModelConfig c;
  const std::string model_type = keys.string("model_type", "");
  if (model_type.empty()) keys.fail("model_type", "missing (required)");
  const std::optional<Arch> arch = parse_choice(kArchs, model_type);
  if (!arch)
    keys.fail("model_type", "unsupported '" + model_type + "' (supported: " + choice_names(kArchs) + ")");
  c.arch = *arch;
  c.vocab_size = keys.required_integer("vocab_size");
  c.hidden_size = keys.required_integer("hidden_size");
  c.intermediate_size = keys.required_integer("intermediate_size");
  c.num_hidden_layers = keys.required_integer("num_hidden_layers");
  c.num_attention_heads = keys.required_integer("num_attention_heads");
  c.max_position_embeddings = keys.integer("max_position_embeddings", 2048);
  c.bos_token_id = keys.token_id("bos_token_id");
  c.eos_token_id = keys.token_id("eos_token_id");
  c.pad_token_id = keys.token_id("pad_token_id");
  parse_rope_scaling(keys, c.rope_scaling);

  auto activation = [&](const char* fallback) {
    const std::string text = keys.string("hidden_act", fallback);
    const std::optional<Activation> a = parse_choice(kActivations, text);
    if (!a) {
      keys.fail("hidden_act",
                "unsupported activation '" + text + "' (supported: " + choice_names(kActivations) + ")");
    }
    return *a;
  };
  if (c.arch == Arch::gpt_neox) {
    c.num_key_value_heads = c.num_attention_heads;
    c.norm_eps = keys.number("layer_norm_eps", 1e-5);
    c.rope_theta = keys.number("rope_theta", keys.number("rotary_emb_base", 10000.0));
    c.partial_rotary_factor = keys.number("partial_rotary_factor", keys.number("rotary_pct", 0.25));
    c.hidden_act = activation("gelu");
    c.parallel_residual = keys.boolean("use_parallel_residual", true);
    c.attention_bias = keys.boolean("attention_bias", true);
    c.tie_word_embeddings = keys.boolean("tie_word_embeddings", false);
  } else {
    c.num_key_value_heads = keys.integer("num_key_value_heads", c.num_attention_heads);
    c.head_dim = keys.integer("head_dim", 0);
    c.norm_eps = keys.number("rms_norm_eps", 1e-6);
    c.rope_theta = keys.number("rope_theta", 10000.0);
    c.partial_rotary_factor = keys.number("partial_rotary_factor", 1.0);
    c.hidden_act = activation("silu");
    c.tie_word_embeddings = keys.boolean("tie_word_embeddings", false);
    if (c.arch == Arch::qwen2) {
      if (keys.boolean("use_sliding_window", false)) {
        keys.fail("use_sliding_window", "Qwen2 sliding-window layers are not supported");
      }
    } else if (c.arch == Arch::llama) {
      c.attention_bias = keys.boolean("attention_bias", false);
      c.mlp_bias = keys.boolean("mlp_bias", false);
    }
    if (c.arch == Arch::mistral) c.sliding_window = keys.integer("sliding_window", 0);
  }
  c.resolve_defaults();
  c.validate(source);
  return c;
}

ModelConfig read_hf_config(const std::string& dir) {
  const std::string path = join_path(dir, "config.json");
  return parse_hf_config(read_text_file(path), path);
}

std::string hf_config_json(const ModelConfig& c, const std::string& torch_dtype) {
  json j;
  j["model_type"] = name(c.arch);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["hidden_act"] = choice_name(kActivations, c.hidden_act);
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  auto id_or_null = [](int64_t id) { return id >= 0 ? json(id) : json(nullptr); };
  j["bos_token_id"] = id_or_null(c.bos_token_id);
  j["eos_token_id"] = id_or_null(c.eos_token_id);
  if (c.pad_token_id >= 0) j["pad_token_id"] = c.pad_token_id;
  json rope = nullptr;
  if (c.rope_scaling.type != RopeType::none) {
    rope = {{"rope_type", choice_name(kRopeTypes, c.rope_scaling.type)}, {"factor", c.rope_scaling.factor}};
    if (c.rope_scaling.type == RopeType::llama3) {
      rope["low_freq_factor"] = c.rope_scaling.low_freq_factor;
      rope["high_freq_factor"] = c.rope_scaling.high_freq_factor;
      rope["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    }
  }
  j["rope_scaling"] = rope;
  if (c.arch == Arch::gpt_neox) {
    j["architectures"] = {"GPTNeoXForCausalLM"};
    j["layer_norm_eps"] = c.norm_eps;
    j["rotary_pct"] = c.partial_rotary_factor;
    j["partial_rotary_factor"] = c.partial_rotary_factor;
    j["rotary_emb_base"] = c.rope_theta;
    j["rope_theta"] = c.rope_theta;
    j["use_parallel_residual"] = c.parallel_residual;
    j["attention_bias"] = c.attention_bias;
  } else {
    const char* arch_class = c.arch == Arch::llama     ? "LlamaForCausalLM"
                             : c.arch == Arch::mistral ? "MistralForCausalLM"
                                                       : "Qwen2ForCausalLM";
    j["architectures"] = {arch_class};
    j["num_key_value_heads"] = c.kv_heads();
    j["head_dim"] = c.head_size();
    j["rms_norm_eps"] = c.norm_eps;
    j["rope_theta"] = c.rope_theta;
    if (c.partial_rotary_factor != 1.0) j["partial_rotary_factor"] = c.partial_rotary_factor;
    if (c.arch == Arch::llama) {
      j["attention_bias"] = c.attention_bias;
      j["mlp_bias"] = c.mlp_bias;
    }
    if (c.arch == Arch::mistral)
      j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
    if (c.arch == Arch::qwen2) j["use_sliding_window"] = false;
  }
  return j.dump(2) + "\n";
}

std::string hf_config_with_dtype(const std::string& json_text, const std::string& torch_dtype) {
  json j = json::parse(json_text);
  j["torch_dtype"] = torch_dtype;
  return j.dump(2) + "\n";
}

}  // namespace kto::model
