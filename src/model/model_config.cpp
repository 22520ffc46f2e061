#include "kto/model/model_config.h"

#include "kto/util/check.h"

namespace kto::model {

using detail::str_cat;

int64_t ModelConfig::rotary_dim() const {
  // Hugging Face: int(head_dim * partial_rotary_factor); rotate_half needs it even.
  return static_cast<int64_t>(static_cast<double>(head_size()) * partial_rotary_factor);
}

int64_t ModelConfig::num_parameters() const {
  const int64_t c = hidden_size;
  const int64_t d = head_size();
  const int64_t q = num_attention_heads * d;
  const int64_t kv = kv_heads() * d;
  const int64_t norm = uses_layer_norm() ? 2 * c : c;
  int64_t block = 2 * norm + c * (q + 2 * kv) + q * c;
  if (qkv_bias()) block += q + 2 * kv;
  if (out_bias()) block += c;
  const int64_t mlp_in = gated_mlp() ? 2 * intermediate_size : intermediate_size;
  block += c * mlp_in + intermediate_size * c;
  if (mlp_bias) block += mlp_in + c;
  int64_t total = vocab_size * c + num_hidden_layers * block + norm;
  if (!tie_word_embeddings) total += vocab_size * c;
  return total;
}

double ModelConfig::forward_flops(int64_t positions, int64_t attention_pairs, int64_t head_rows) const {
  const double c = static_cast<double>(hidden_size), d = static_cast<double>(head_size());
  const double q = static_cast<double>(num_attention_heads) * d, kv = static_cast<double>(kv_heads()) * d;
  const double mlp_in = static_cast<double>(gated_mlp() ? 2 * intermediate_size : intermediate_size);
  const double linear = c * (q + 2 * kv) + q * c + c * mlp_in + static_cast<double>(intermediate_size) * c;
  const double layers = static_cast<double>(num_hidden_layers);
  const double blocks = 2.0 * layers * linear * static_cast<double>(positions);
  const double attention = 2.0 * 2.0 * layers * q * static_cast<double>(attention_pairs);  // scores, values
  const double head = 2.0 * c * static_cast<double>(vocab_size) * static_cast<double>(head_rows);
  return blocks + attention + head;
}

void ModelConfig::resolve_defaults() {
  if (num_key_value_heads == 0) num_key_value_heads = num_attention_heads;
  if (head_dim == 0 && num_attention_heads > 0 && hidden_size % num_attention_heads == 0) {
    head_dim = hidden_size / num_attention_heads;
  }
  if (arch == Arch::gpt_neox) mlp_bias = true;     // every GPT-NeoX MLP projection has a bias
  if (arch == Arch::qwen2) attention_bias = true;  // every Qwen2 q/k/v projection has a bias
}

void ModelConfig::validate(const std::string& source, const std::string& prefix) const {
  auto fail = [&](const std::string& key, const std::string& what) {
    throw ConfigError(str_cat(source, ": key '", prefix, key, "': ", what));
  };
  // Sizes come from files: each is bounded by what any real model has, with room to spare (the
  // kModelLimits comment), so a typo or a damaged file fails here naming the key instead of
  // allocating terabytes or hanging.
  auto in_range = [&](const char* key, int64_t value, int64_t lo, int64_t hi) {
    if (value < lo || value > hi) fail(key, str_cat(value, " is outside [", lo, ", ", hi, "]"));
  };
  const ModelLimits& m = kModelLimits;
  in_range("vocab_size", vocab_size, 1, m.vocab_size);
  in_range("hidden_size", hidden_size, 1, m.hidden_size);
  in_range("intermediate_size", intermediate_size, 1, m.intermediate_size);
  in_range("num_hidden_layers", num_hidden_layers, 1, m.num_hidden_layers);
  in_range("num_attention_heads", num_attention_heads, 1, m.heads);
  in_range("num_key_value_heads", num_key_value_heads, 0, m.heads);
  in_range("head_dim", head_dim, 0, m.head_dim);
  in_range("max_position_embeddings", max_position_embeddings, 1, m.positions);
  in_range("sliding_window", sliding_window, 0, m.positions);
  if (num_attention_heads % kv_heads() != 0) {
    fail("num_key_value_heads",
         str_cat(kv_heads(), " does not divide num_attention_heads (", num_attention_heads, ")"));
  }
  if (head_dim < 0) fail("head_dim", "must not be negative");
  if (head_dim == 0 && hidden_size % num_attention_heads != 0) {
    fail("hidden_size", str_cat(hidden_size, " is not divisible by num_attention_heads (",
                                num_attention_heads, "); set head_dim explicitly"));
  }
  if (arch == Arch::gpt_neox) {
    if (kv_heads() != num_attention_heads) {
      fail("num_key_value_heads", "gpt_neox has no grouped-query attention (must equal num_attention_heads)");
    }
    if (head_size() * num_attention_heads != hidden_size) {
      fail("head_dim", str_cat("gpt_neox needs head_dim * num_attention_heads == hidden_size (", head_size(),
                               " * ", num_attention_heads, " != ", hidden_size, ")"));
    }
  }
  if (arch == Arch::mistral && attention_bias) fail("attention_bias", "mistral has no attention biases");
  if ((arch == Arch::mistral || arch == Arch::qwen2) && mlp_bias)
    fail("mlp_bias", std::string(name(arch)) + " has no MLP biases");
  if (!(norm_eps > 0)) fail("norm_eps", str_cat("must be positive, got ", norm_eps));
  if (!(rope_theta > 0)) fail("rope_theta", str_cat("must be positive, got ", rope_theta));
  if (!(partial_rotary_factor > 0 && partial_rotary_factor <= 1)) {
    fail("partial_rotary_factor", str_cat("must be in (0, 1], got ", partial_rotary_factor));
  }
  if (rotary_dim() < 2 || rotary_dim() % 2 != 0) {
    fail("partial_rotary_factor",
         str_cat("rotates ", rotary_dim(), " of ", head_size(), " head dims; needs an even number >= 2"));
  }
  const RopeScaling& rs = rope_scaling;
  if (rs.type != RopeType::none && !(rs.factor > 0)) fail("rope_scaling.factor", "must be positive");
  if (rs.type == RopeType::llama3) {
    if (!(rs.low_freq_factor > 0 && rs.high_freq_factor > rs.low_freq_factor)) {
      fail("rope_scaling.high_freq_factor", "llama3 needs 0 < low_freq_factor < high_freq_factor");
    }
    if (rs.original_max_position_embeddings <= 0) {
      fail("rope_scaling.original_max_position_embeddings", "must be positive");
    }
  }
  if (sliding_window < 0) fail("sliding_window", "must not be negative (0 = full attention)");
  for (const auto& [key, id] : {std::pair<const char*, int64_t>{"bos_token_id", bos_token_id},
                                {"eos_token_id", eos_token_id},
                                {"pad_token_id", pad_token_id}}) {
    if (id < -1 || id >= vocab_size)
      fail(key, str_cat(id, " is outside the vocabulary [0, ", vocab_size, ")"));
  }
}

double activation_bytes(const ModelConfig& c, int64_t batch, int64_t seq_len, int bytes, bool with_grad,
                        bool recompute) {
  const double B = static_cast<double>(batch), T = static_cast<double>(seq_len), tokens = B * T;
  const double C = static_cast<double>(c.hidden_size), I = static_cast<double>(c.intermediate_size);
  const double H = static_cast<double>(c.num_attention_heads), D = static_cast<double>(c.head_size());
  const double qkv = (H + 2.0 * static_cast<double>(c.kv_heads())) * D;
  const double mlp = c.gated_mlp() ? 3.0 * I : 2.0 * I;
  const double block = tokens * (3.0 * C + qkv + 3.0 * H * D + mlp) * bytes + 2.0 * B * H * T * T * 4.0;
  const double residual = 2.0 * tokens * C * bytes, logits = 2.0 * (64 << 20);
  if (!with_grad) return residual + block + logits;
  const double L = static_cast<double>(c.num_hidden_layers);
  return recompute ? tokens * C * bytes * (L + 2.0) + 2.0 * block + logits : L * block + residual + logits;
}

}  // namespace kto::model
