// kto-ckpt init and kto-ckpt config: random models from a config, and config inspection.
#include <ATen/ATen.h>

#include <iostream>

#include "ckpt_commands.h"
#include "kto/config/config.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/util/cli.h"
#include "kto/util/log.h"
#include "kto/util/memory.h"

namespace kto::apps {

using detail::str_cat;

int ckpt_init(int argc, char** argv) {
  std::string config_path, out_dir, dtype_name = "fp32";
  std::vector<std::string> overrides;
  cli::Args args("kto-ckpt init",
                 "Writes a randomly initialised model, described by a config's model.architecture,\n"
                 "as a Hugging Face directory (config.json + model.safetensors).");
  args.option("--config", &config_path, "FILE", "kto YAML config with a model.architecture section",
              cli::required)
      .list("--set", &overrides, "KEY=VALUE",
            "override a config key (repeatable), e.g. --set model.init_seed=7")
      .option("--out", &out_dir, "DIR", "output directory", cli::required)
      .option("--dtype", &dtype_name, "fp32|bf16", "stored weight dtype (default fp32)");
  if (!args.parse(argc, argv, 2)) return 0;
  if (dtype_name != "fp32" && dtype_name != "bf16") {
    throw cli::UsageError("--dtype: expected fp32 or bf16, got '" + dtype_name + "'");
  }
  const config::Config cfg = config::load_config(config_path, overrides);
  if (!cfg.model.path.empty()) {
    throw ConfigError(config_path + ": model.path is set; init needs a model.architecture section instead");
  }
  if (cfg.run.check_memory) {
    const double n = static_cast<double>(cfg.model.architecture.num_parameters());
    check_fits_in_memory(
        n * (4 + (dtype_name == "bf16" ? 2 : 4)), config_path + ": model.architecture",
        str_cat(cfg.model.architecture.num_parameters(), " parameters in fp32, and a copy to write"),
        "set run.check_memory: false to try anyway");
  }
  model::DenseModel m(cfg.model.architecture, at::kFloat);
  m.init_random(static_cast<uint64_t>(cfg.model.init_seed), cfg.model.init_std);
  io::save_hf_model(out_dir, m.config(), m.layout(), m.units(),
                    dtype_name == "bf16" ? at::kBFloat16 : at::kFloat);
  log::info("init", "wrote ", out_dir, ": ", model::name(m.config().arch), " with ",
            m.config().num_parameters(), " parameters (seed ", cfg.model.init_seed, ")");
  return 0;
}

int ckpt_config(int argc, char** argv) {
  std::string config_path;
  std::vector<std::string> overrides;
  bool reference = false, comments = false;
  cli::Args args("kto-ckpt config",
                 "Prints the resolved config (every key, defaults included) after --set overrides,\n"
                 "or with --reference a Markdown table of every key.");
  args.option("--config", &config_path, "FILE", "kto YAML config")
      .list("--set", &overrides, "KEY=VALUE", "override a config key (repeatable)")
      .flag("--comments", &comments, "annotate every key with its description")
      .flag("--reference", &reference, "print the reference of every key (Markdown)");
  if (!args.parse(argc, argv, 2)) return 0;
  if (reference) {
    std::cout << config::config_reference_markdown();
    return 0;
  }
  if (config_path.empty()) throw cli::UsageError("kto-ckpt config: give --config FILE or --reference");
  std::cout << config::dump_config(config::load_config(config_path, overrides), comments);
  return 0;
}

}  // namespace kto::apps
