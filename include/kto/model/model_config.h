// Architecture of a decoder-only model, in one typed struct for every supported family.
//
// Filled either from a Hugging Face `config.json` (kto/model/hf_config.h, which maps each
// family's key names onto these fields) or from the `model.architecture` section of a kto YAML
// config (for tiny random models in tests and the demo). Field names follow the Hugging Face
// Llama names where a family-neutral one exists.
//
// Families: llama (1/2/3.x; GQA, RoPE incl. rope_scaling llama3/linear, tied or untied head),
// mistral (sliding_window), qwen2 (q/k/v bias), gpt_neox (Pythia: parallel residual, partial
// rotary, LayerNorm with bias, fused QKV laid out per head as [q k v], GeLU).
#pragma once

#include <cstdint>
#include <string>

#include "kto/util/choice.h"

namespace kto::model {

// The families, by their Hugging Face `model_type`.
enum class Arch { llama, mistral, qwen2, gpt_neox };
inline constexpr ChoiceTable<Arch, 4> kArchs{{{Arch::llama, "llama"},
                                              {Arch::mistral, "mistral"},
                                              {Arch::qwen2, "qwen2"},
                                              {Arch::gpt_neox, "gpt_neox"}}};
inline const char* name(Arch a) { return choice_name(kArchs, a); }

// MLP activations by their Hugging Face `hidden_act` names (gelu = exact erf form).
enum class Activation { silu, gelu, gelu_new, gelu_pytorch_tanh, relu };
inline constexpr ChoiceTable<Activation, 5> kActivations{
    {{Activation::silu, "silu"},
     {Activation::gelu, "gelu"},
     {Activation::gelu_new, "gelu_new"},
     {Activation::gelu_pytorch_tanh, "gelu_pytorch_tanh"},
     {Activation::relu, "relu"}}};

enum class RopeType { none, linear, llama3 };
inline constexpr ChoiceTable<RopeType, 3> kRopeTypes{
    {{RopeType::none, "none"}, {RopeType::linear, "linear"}, {RopeType::llama3, "llama3"}}};

struct RopeScaling {
  RopeType type = RopeType::none;
  double factor = 1.0;
  double low_freq_factor = 1.0;                     // llama3 only
  double high_freq_factor = 4.0;                    // llama3 only
  int64_t original_max_position_embeddings = 8192;  // llama3 only

  template <class V>
  void visit(V& v) {
    v.choice("type", type, kRopeTypes, "RoPE scaling: none, linear (positions / factor) or llama3");
    v.field("factor", factor, "scaling factor (linear, llama3)");
    v.field("low_freq_factor", low_freq_factor, "llama3: low-frequency factor");
    v.field("high_freq_factor", high_freq_factor, "llama3: high-frequency factor");
    v.field("original_max_position_embeddings", original_max_position_embeddings,
            "llama3: context length the base model was trained with");
  }
};

// The largest sizes validate() accepts, far above any released model (Llama 3.1 405B: 126
// layers, width 16384, MLP 53248, 128 heads; the largest vocabularies ~256k; contexts <= 10M).
struct ModelLimits {
  int64_t vocab_size = int64_t{1} << 24;
  int64_t hidden_size = int64_t{1} << 17;
  int64_t intermediate_size = int64_t{1} << 20;
  int64_t num_hidden_layers = 1024;
  int64_t heads = 1024;
  int64_t head_dim = 4096;
  int64_t positions = int64_t{1} << 26;
};
inline constexpr ModelLimits kModelLimits{};

struct ModelConfig {
  Arch arch = Arch::llama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // 0: same as num_attention_heads (no GQA)
  int64_t head_dim = 0;             // 0: hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  double partial_rotary_factor = 1.0;  // fraction of head_dim that is rotated (Pythia: 0.25)
  RopeScaling rope_scaling;
  Activation hidden_act = Activation::silu;
  // Hugging Face meaning per family: llama and gpt_neox put a bias on q, k, v and the output
  // projection; qwen2 always has q/k/v biases and none on the output; mistral has none.
  bool attention_bias = false;
  bool mlp_bias = false;           // llama only; always on for gpt_neox
  bool parallel_residual = false;  // x + attn(ln1 x) + mlp(ln2 x)  (GPT-NeoX)
  bool tie_word_embeddings = false;
  int64_t sliding_window = 0;  // 0: full causal attention; w: query i sees keys i-w < j <= i
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  int64_t pad_token_id = -1;

  // Derived facts (valid after resolve_defaults() and validate()).
  int64_t kv_heads() const { return num_key_value_heads > 0 ? num_key_value_heads : num_attention_heads; }
  int64_t head_size() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  // Rotated dims per head (even).
  int64_t rotary_dim() const;
  bool uses_layer_norm() const { return arch == Arch::gpt_neox; }
  bool gated_mlp() const { return arch != Arch::gpt_neox; }
  bool qkv_bias() const { return attention_bias; }
  bool out_bias() const { return attention_bias && arch != Arch::qwen2; }
  // Total number of parameters (tied head counted once).
  int64_t num_parameters() const;
  // Matmul FLOPs of one forward that computes `positions` token positions through the blocks,
  // `attention_pairs` (query, key) products per layer and head (the kernels' full score tiles,
  // masked ones included) and the LM head on `head_rows` positions: 2 per multiply-add.
  double forward_flops(int64_t positions, int64_t attention_pairs, int64_t head_rows) const;

  // Fills derived defaults in place: num_key_value_heads and head_dim when 0, the q/k/v bias
  // every qwen2 has and the MLP bias every gpt_neox has. Call before validate().
  void resolve_defaults();

  // Throws kto::ConfigError naming `source` and the key (prefixed with `prefix`, e.g.
  // "model.architecture.") for any inconsistent value.
  void validate(const std::string& source, const std::string& prefix = "") const;

  template <class V>
  void visit(V& v) {
    v.choice("arch", arch, kArchs, "model family");
    v.required("vocab_size", vocab_size, "vocabulary size");
    v.required("hidden_size", hidden_size, "model width");
    v.required("intermediate_size", intermediate_size, "MLP width");
    v.required("num_hidden_layers", num_hidden_layers, "number of decoder blocks");
    v.required("num_attention_heads", num_attention_heads, "query heads");
    v.field("num_key_value_heads", num_key_value_heads, "key/value heads (GQA); 0 = num_attention_heads");
    v.field("head_dim", head_dim, "per-head width; 0 = hidden_size / num_attention_heads");
    v.field("max_position_embeddings", max_position_embeddings, "longest supported sequence");
    v.field("norm_eps", norm_eps, "RMSNorm / LayerNorm epsilon");
    v.field("rope_theta", rope_theta, "RoPE base");
    v.field("partial_rotary_factor", partial_rotary_factor, "fraction of head_dim rotated by RoPE");
    v.section("rope_scaling", rope_scaling, "RoPE scaling for long contexts");
    v.choice("hidden_act", hidden_act, kActivations, "MLP activation (gelu = exact erf form)");
    v.field("attention_bias", attention_bias,
            "attention biases (llama, gpt_neox: q/k/v and output; qwen2: always q/k/v)");
    v.field("mlp_bias", mlp_bias, "bias on MLP projections (llama; always on for gpt_neox)");
    v.field("parallel_residual", parallel_residual, "GPT-NeoX parallel attention + MLP residual");
    v.field("tie_word_embeddings", tie_word_embeddings, "LM head shares the embedding matrix");
    v.field("sliding_window", sliding_window, "attention window (0 = full causal)");
    v.field("bos_token_id", bos_token_id, "beginning-of-sequence id (-1 = none)");
    v.field("eos_token_id", eos_token_id, "end-of-sequence id (-1 = none)");
    v.field("pad_token_id", pad_token_id, "padding id (-1 = none)");
  }
};

// Rough peak bytes of the activations of a pass over a batch of `batch` sequences of `seq_len`
// tokens in a dtype of `bytes` per element: one block's working set (normed input, q/k/v, rotated
// q/k, attention output, MLP up/activation/down) with its attention scores and probabilities
// (batch x heads x seq_len^2 in fp32), the residual stream, and two chunks of fp32 logits. With
// `with_grad`, either every unit's input is kept and one block is recomputed (`recompute`), or
// every block's working set is kept until backward. An estimate for refusing jobs that cannot
// fit, not an accounting.
double activation_bytes(const ModelConfig& config, int64_t batch, int64_t seq_len, int bytes, bool with_grad,
                        bool recompute);

}  // namespace kto::model
