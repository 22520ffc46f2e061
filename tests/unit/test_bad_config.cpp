// Configs and model sizes from a bad source: sizes range-checked against what any real model
// has, numbers that are not finite refused, nesting bounded, and every error naming the file
// (or the --set) and the key.
#include <catch2/catch.hpp>
#include <string>

#include "kto/config/config.h"
#include "kto/model/hf_config.h"
#include "kto/util/check.h"
#include "kto/util/memory.h"
#include "kto/util/process.h"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

const char* kTiny = R"(model:
  architecture: {arch: llama, vocab_size: 64, hidden_size: 32, intermediate_size: 48,
                 num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2}
run: {dir: runs/test}
)";

std::string yaml_error(const std::vector<std::string>& overrides) {
  try {
    kto::config::parse_config(kTiny, "cfg.yaml", overrides);
  } catch (const kto::ConfigError& e) {
    return e.what();
  }
  return "no error";
}

std::string hf_error(const std::string& extra) {
  const std::string base =
      R"("model_type":"llama","vocab_size":128,"hidden_size":64,"intermediate_size":160,)"
      R"("num_hidden_layers":2,"num_attention_heads":4)";
  try {
    kto::model::parse_hf_config("{" + base + extra + "}", "/m/config.json");
  } catch (const kto::ConfigError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("config.json: deep nesting and huge sizes are errors naming the key, not crashes or hangs",
          "[config][bad_input]") {
  // 100,000 nested arrays in rope_scaling overflowed the stack in nlohmann's dump.
  const std::string deep =
      "," + std::string("\"rope_scaling\":") + std::string(100000, '[') + std::string(100000, ']');
  CHECK_THAT(hf_error(deep), Contains("/m/config.json") && Contains("nested deeper than 64 levels"));
  CHECK_THAT(hf_error(R"(,"rope_scaling":[[1]])"),
             Contains("'rope_scaling'") && Contains("an array of 1 value"));
  // 10^9, 2^32+2 and 2^63-1 layers hung or grew to 23 GB.
  for (const char* layers : {"1000000000", "4294967298", "9223372036854775807"}) {
    INFO(layers);
    const std::string text = hf_error(std::string(R"(,"num_hidden_layers":)") + layers);
    CHECK_THAT(
        text, Contains("/m/config.json") && Contains("'num_hidden_layers'") && Contains("outside [1, 1024]"));
  }
  // 2^40-ish widths ended in LibTorch's raw allocator message without the key.
  for (const char* key : {"hidden_size", "vocab_size", "intermediate_size", "num_attention_heads"}) {
    INFO(key);
    CHECK_THAT(hf_error(std::string(",\"") + key + "\":1099511627776"),
               Contains(std::string("'") + key + "'") && Contains("outside [1, "));
  }
}

TEST_CASE("YAML: huge sizes, non-finite numbers and batches are errors naming the key",
          "[config][bad_input]") {
  CHECK_THAT(yaml_error({"model.architecture.num_hidden_layers=1000000000"}),
             Contains("'model.architecture.num_hidden_layers'") && Contains("outside [1, 1024]"));
  CHECK_THAT(yaml_error({"optim.lr=1e300"}), Contains("'optim.lr'") && Contains("(0, 10]"));
  CHECK_THAT(yaml_error({"optim.lr=.inf"}), Contains("'optim.lr'"));
  CHECK_THAT(yaml_error({"loss.beta=.inf"}), Contains("'loss.beta'") && Contains("(0, 1e4]"));
  CHECK_THAT(yaml_error({"loss.desirable_weight=.inf"}), Contains("'loss.desirable_weight'"));
  CHECK_THAT(yaml_error({"data.micro_batch=100000000"}),
             Contains("'data.micro_batch'") && Contains("outside [1, 65536]"));
  CHECK_THAT(yaml_error({"data.grad_accum=100000000"}), Contains("'data.grad_accum'"));
  CHECK_THAT(yaml_error({"train.epochs=.inf"}), Contains("'train.epochs'"));
}

TEST_CASE("a --set that introduces unknown sections is blamed on the --set", "[config][bad_input]") {
  CHECK_THAT(yaml_error({"a.b.c.d=1"}), Contains("--set a.b.c.d") && Contains("unknown key 'a'"));
}

TEST_CASE("a value out of range from a --set is blamed on the --set, not on the file",
          "[config][bad_input]") {
  CHECK_THAT(yaml_error({"loss.beta=-1"}),
             StartsWith("--set loss.beta=-1: key 'loss.beta'") && Contains("must be in (0, 1e4]"));
  CHECK_THAT(yaml_error({"optim.lr=1e300"}), StartsWith("--set optim.lr=1e300: key 'optim.lr'"));
  // A key the file holds and no --set touched keeps the file as its source.
  CHECK_THAT(yaml_error({"optim.lr=1e300", "loss.beta=0.1"}), StartsWith("--set optim.lr=1e300"));
}

TEST_CASE("thread counts are bounded by the host's cores", "[config][bad_input]") {
  CHECK_THROWS_WITH(kto::compute_threads(100000, 1, "--threads"),
                    Contains("--threads") && Contains("100000"));
  CHECK_THROWS_WITH(kto::compute_threads(-3, 1, "--threads"), Contains("--threads") && Contains("-3"));
  CHECK(kto::compute_threads(1, 1, "--threads") == 1);
  CHECK(kto::compute_threads(0, 1, "--threads") >= 1);
}

TEST_CASE("the memory check names what it counted and how to override", "[config][bad_input]") {
  const int64_t have = kto::physical_memory_bytes();
  REQUIRE(have > 0);
  CHECK_NOTHROW(kto::check_fits_in_memory(static_cast<double>(have) / 2, "small", "half", "never"));
  CHECK_THROWS_WITH(
      kto::check_fits_in_memory(static_cast<double>(have) * 4, "the job", "weights 1 EiB", "set x: false"),
      Contains("the job needs ~") && Contains("weights 1 EiB") && Contains("of memory") &&
          Contains("set x: false"));
  CHECK(kto::human_bytes(88931000) == "84.8 MiB");
}
