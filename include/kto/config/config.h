// The typed configuration of a kto run: one struct per component, parsed and validated in one
// place (STYLE 9). Every struct lists its keys once, in visit(); reading YAML, applying
// `--set a.b=value` overrides, dumping the resolved config and generating the reference docs
// all walk that same list, so they cannot drift apart.
//
// Errors name the file, the line and the full key: unknown keys (with a did-you-mean), wrong
// types, missing required keys and inconsistent values are all kto::ConfigError.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kto/model/model_config.h"

namespace kto::config {

struct ModelSection {
  std::string path;            // Hugging Face directory; empty = random init from `architecture`
  std::string dtype = "fp32";  // compute dtype
  model::ModelConfig architecture;
  int64_t init_seed = 1234;
  double init_std = 0.02;

  template <class V>
  void visit(V& v) {
    v.field("path", path,
            "Hugging Face checkpoint directory (config.json + *.safetensors); empty: random init from "
            "`architecture`");
    v.choice("dtype", dtype, {"fp32", "bf16", "fp64"}, "compute dtype of the forward and backward passes");
    v.section("architecture", architecture, "architecture of a randomly initialised model (tests, demo)");
    v.field("init_seed", init_seed, "seed of the random initialisation");
    v.field("init_std", init_std, "standard deviation of random weight matrices");
  }
};

struct RunSection {
  std::string dir = "runs/kto";
  int64_t threads = 0;  // 0: OMP_NUM_THREADS, else all cores
  std::string log_level = "info";

  template <class V>
  void visit(V& v) {
    v.field("dir", dir, "run directory: metrics, checkpoints, resolved config");
    v.field("threads", threads, "CPU threads per rank for LibTorch (0: OMP_NUM_THREADS or all cores)");
    v.choice("log_level", log_level, {"debug", "info", "warn", "error"}, "log verbosity");
  }
};

struct Config {
  ModelSection model;
  RunSection run;

  template <class V>
  void visit(V& v) {
    v.section("model", model, "policy (and reference) model");
    v.section("run", run, "run directory and process settings");
  }
  // Cross-key checks; throws kto::ConfigError naming `source` and the key.
  void validate(const std::string& source) const;
};

// Reads `path`, applies `overrides` ("a.b=value", YAML syntax for the value) and validates.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Same from YAML text; `source` names it in errors.
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});
// The resolved config as YAML (every key, defaults included); loads back to the same Config.
std::string dump_config(const Config& config, bool with_comments = false);
// Markdown table of every key: name, type, default, description.
std::string config_reference_markdown();

}  // namespace kto::config
