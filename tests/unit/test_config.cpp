// Typed configs: YAML parsing, errors that name the key and the file, --set overrides, dumping,
// and Hugging Face config.json parsing for every family.
#include <catch2/catch.hpp>

#include "kto/config/config.h"
#include "kto/model/hf_config.h"
#include "kto/util/check.h"
#include "test_support.h"

using Catch::Matchers::Contains;
using kto::config::parse_config;

namespace {

const char* kTiny = R"(model:
  dtype: fp32
  architecture:
    arch: llama
    vocab_size: 64
    hidden_size: 32
    intermediate_size: 48
    num_hidden_layers: 2
    num_attention_heads: 4
    num_key_value_heads: 2
run:
  dir: runs/test
)";

std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(yaml, "cfg.yaml", overrides);
  } catch (const kto::ConfigError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("a valid config parses with defaults filled in", "[config]") {
  const auto cfg = parse_config(kTiny, "cfg.yaml");
  CHECK(cfg.model.architecture.hidden_size == 32);
  CHECK(cfg.model.architecture.head_dim == 8);  // resolved default
  CHECK(cfg.model.architecture.rope_theta == 10000.0);
  CHECK(cfg.model.init_std == 0.02);
  CHECK(cfg.run.dir == "runs/test");
}

TEST_CASE("config errors name the file, the line and the full key", "[config]") {
  SECTION("unknown key, with a suggestion and the valid keys") {
    const std::string e = error_of(std::string(kTiny) + "  hiden_size: 3\n");
    CHECK_THAT(e, Contains("cfg.yaml:13") && Contains("unknown key 'run.hiden_size'"));
    const std::string e2 = error_of(R"(model:
  architecture:
    arch: llama
    vocab_size: 64
    hiden_size: 32
)");
    CHECK_THAT(e2, Contains("cfg.yaml:5") && Contains("'model.architecture.hiden_size'") &&
                       Contains("did you mean 'hidden_size'?"));
    CHECK_THAT(error_of("modle: {}\n"), Contains("unknown key 'modle'") && Contains("did you mean 'model'"));
  }
  SECTION("wrong type") {
    std::string yaml = kTiny;
    yaml.replace(yaml.find("hidden_size: 32"), 15, "hidden_size: big");
    CHECK_THAT(error_of(yaml), Contains("cfg.yaml:6") && Contains("'model.architecture.hidden_size'") &&
                                   Contains("expected int, got 'big'"));
    CHECK_THAT(error_of("run:\n  dir: [a, b]\n"),
               Contains("'run.dir'") && Contains("expected string, got a list"));
    CHECK_THAT(error_of("run: 3\n"), Contains("'run'") && Contains("expected a section"));
    CHECK_THAT(error_of("model:\n  dtype: fp16\n"),
               Contains("'model.dtype'") && Contains("fp32, bf16, fp64"));
  }
  SECTION("missing required key") {
    std::string yaml = kTiny;
    yaml.erase(yaml.find("    vocab_size: 64\n"), 19);
    CHECK_THAT(error_of(yaml),
               Contains("missing required key") && Contains("'model.architecture.vocab_size'"));
  }
  SECTION("inconsistent model dimensions") {
    std::string yaml = kTiny;
    yaml.replace(yaml.find("hidden_size: 32"), 15, "hidden_size: 30");
    CHECK_THAT(error_of(yaml), Contains("cfg.yaml") && Contains("'model.architecture.hidden_size'") &&
                                   Contains("not divisible by num_attention_heads"));
    yaml = kTiny;
    yaml.replace(yaml.find("num_key_value_heads: 2"), 22, "num_key_value_heads: 3");
    CHECK_THAT(error_of(yaml),
               Contains("'model.architecture.num_key_value_heads'") && Contains("does not divide"));
    CHECK_THAT(error_of(kTiny, {"model.architecture.partial_rotary_factor=0.1"}),
               Contains("'model.architecture.partial_rotary_factor'"));
    CHECK_THAT(error_of(kTiny, {"model.architecture.eos_token_id=64"}),
               Contains("'model.architecture.eos_token_id'"));
  }
  SECTION("model needs a path or an architecture, not both") {
    CHECK_THAT(error_of("run: {dir: x}\n"), Contains("'path'") && Contains("'architecture'"));
    CHECK_THAT(error_of(kTiny, {"model.path=/some/dir"}), Contains("exclusive"));
  }
  SECTION("invalid YAML") {
    CHECK_THAT(error_of("model: [unclosed\n"), Contains("cfg.yaml") && Contains("invalid YAML"));
  }
}

TEST_CASE("overrides (--set) replace, add and are checked like file keys", "[config]") {
  const auto cfg = parse_config(kTiny, "cfg.yaml",
                                {"model.architecture.hidden_size=64", "run.dir=elsewhere", "model.dtype=bf16",
                                 "model.architecture.rope_scaling.type=llama3", "run.threads=3"});
  CHECK(cfg.model.architecture.hidden_size == 64);
  CHECK(cfg.model.architecture.head_dim == 16);
  CHECK(cfg.model.architecture.rope_scaling.type == kto::model::RopeType::llama3);
  CHECK(cfg.run.dir == "elsewhere");
  CHECK(cfg.model.dtype == kto::config::Dtype::bf16);
  CHECK(cfg.run.threads == 3);
  CHECK_THAT(error_of(kTiny, {"run.thread=2"}),
             Contains("--set run.thread") && Contains("unknown key") && Contains("did you mean 'threads'"));
  CHECK_THAT(error_of(kTiny, {"run.threads=many"}),
             Contains("--set run.threads") && Contains("expected int"));
  CHECK_THAT(error_of(kTiny, {"run.dir.x=1"}), Contains("'run.dir' is a value"));
  CHECK_THAT(error_of(kTiny, {"novalue"}), Contains("expected key=value"));
}

TEST_CASE("a dumped config parses back to the same config", "[config]") {
  const auto cfg =
      parse_config(kTiny, "cfg.yaml", {"model.init_std=0.037", "model.architecture.rope_theta=500000"});
  for (bool comments : {false, true}) {
    const std::string text = kto::config::dump_config(cfg, comments);
    const auto back = parse_config(text, "dump.yaml");
    CHECK(kto::config::dump_config(back) == kto::config::dump_config(cfg));
    CHECK(back.model.init_std == cfg.model.init_std);
    CHECK(back.model.architecture.rope_theta == 500000.0);
  }
  const std::string reference = kto::config::config_reference_markdown();
  CHECK_THAT(reference, Contains("`model.architecture.hidden_size` | int | required"));
  CHECK_THAT(reference, Contains("`model.dtype` | fp32 \\| bf16 \\| fp64 | `fp32`"));
}

TEST_CASE("Hugging Face config.json maps onto ModelConfig for every family", "[config][hf]") {
  using kto::model::parse_hf_config;
  SECTION("llama 3.1 style: rope_scaling llama3, eos list, GQA") {
    const auto c = parse_hf_config(R"({"model_type":"llama","vocab_size":256,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":2,
      "rms_norm_eps":1e-5,"rope_theta":500000.0,"eos_token_id":[5,6,7],"bos_token_id":4,
      "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
      "original_max_position_embeddings":8192},"tie_word_embeddings":true})",
                                   "config.json");
    CHECK(c.kv_heads() == 2);
    CHECK(c.head_size() == 8);
    CHECK(c.eos_token_id == 5);
    CHECK(c.rope_scaling.type == kto::model::RopeType::llama3);
    CHECK(c.rope_scaling.factor == 8.0);
    CHECK(c.tie_word_embeddings);
    CHECK_FALSE(c.qkv_bias());
  }
  SECTION("gpt_neox spellings") {
    const auto c = parse_hf_config(R"({"model_type":"gpt_neox","vocab_size":128,"hidden_size":64,
      "intermediate_size":256,"num_hidden_layers":2,"num_attention_heads":4,"rotary_pct":0.25,
      "rotary_emb_base":10000,"layer_norm_eps":1e-5,"hidden_act":"gelu"})",
                                   "config.json");
    CHECK(c.parallel_residual);
    CHECK(c.rotary_dim() == 4);
    CHECK(c.qkv_bias());
    CHECK(c.out_bias());
    CHECK(c.mlp_bias);
    CHECK(c.uses_layer_norm());
  }
  SECTION("qwen2 and mistral") {
    const auto q = parse_hf_config(R"({"model_type":"qwen2","vocab_size":128,"hidden_size":64,
      "intermediate_size":160,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
      "use_sliding_window":false,"sliding_window":4096})",
                                   "config.json");
    CHECK(q.qkv_bias());
    CHECK_FALSE(q.out_bias());
    CHECK(q.sliding_window == 0);
    const auto m = parse_hf_config(R"({"model_type":"mistral","vocab_size":128,"hidden_size":64,
      "intermediate_size":160,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
      "sliding_window":4096,"head_dim":32})",
                                   "config.json");
    CHECK(m.sliding_window == 4096);
    CHECK(m.head_size() == 32);
  }
  SECTION("unsupported or ill-typed keys are errors naming the key and the file") {
    const std::string base =
        R"("vocab_size":128,"hidden_size":64,"intermediate_size":160,"num_hidden_layers":2,"num_attention_heads":4)";
    auto err = [&](const std::string& extra) {
      try {
        parse_hf_config("{" + base + "," + extra + "}", "/m/config.json");
      } catch (const kto::ConfigError& e) {
        return std::string(e.what());
      }
      return std::string("no error");
    };
    CHECK_THAT(err(R"("model_type":"bert")"),
               Contains("/m/config.json") && Contains("'model_type'") && Contains("bert"));
    CHECK_THAT(err(R"("model_type":"llama","rope_scaling":{"type":"yarn","factor":4})"),
               Contains("'rope_scaling'") && Contains("yarn"));
    CHECK_THAT(err(R"("model_type":"qwen2","use_sliding_window":true)"), Contains("'use_sliding_window'"));
    CHECK_THAT(err(R"("model_type":"llama","hidden_act":"swish")"), Contains("'hidden_act'"));
    CHECK_THAT(err(R"("model_type":"llama","num_key_value_heads":"2")"),
               Contains("'num_key_value_heads'") && Contains("integer"));
    CHECK_THAT(err(R"("model_type":"llama","num_key_value_heads":3)"), Contains("'num_key_value_heads'"));
    CHECK_THROWS_WITH(parse_hf_config(R"({"model_type":"llama"})", "c.json"),
                      Contains("c.json") && Contains("'vocab_size'") && Contains("missing"));
  }
}
