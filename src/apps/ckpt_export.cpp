// kto-ckpt export and kto-ckpt inspect: checkpoints out to Hugging Face, and into view.
//
// export streams: it assembles one output file's tensors at a time from the shards (any world
// size), so memory stays at one output file (--max-shard-size), never the whole model.
#include <ATen/ATen.h>

#include <cstdio>
#include <iostream>

#include "ckpt_commands.h"
#include "kto/ckpt/checkpoint.h"
#include "kto/config/config.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/io/safetensors.h"
#include "kto/io/tokenizer_files.h"
#include "kto/model/hf_config.h"
#include "kto/model/layout.h"
#include "kto/util/cli.h"
#include "kto/util/files.h"
#include "kto/util/log.h"

namespace kto::apps {
namespace {

using detail::str_cat;

model::ModelConfig model_config_of(const ckpt::Manifest& m) {
  if (!m.model_source.empty() && path_exists(join_path(m.model_source, "config.json"))) {
    return model::read_hf_config(m.model_source);
  }
  const config::Config c = config::parse_config(m.config_yaml, "the checkpoint's config");
  if (!c.model.path.empty()) return model::read_hf_config(c.model.path);
  return c.model.architecture;
}

}  // namespace

int ckpt_export(int argc, char** argv) {
  std::string checkpoint, out_dir, dtype_name = "bf16", tokenizer;
  bool no_tokenizer = false;
  int64_t max_shard_mb = 5000;
  cli::Args args(
      "kto-ckpt export",
      "Writes a checkpoint's policy as a Hugging Face directory: *.safetensors (+ index), config.json,\n"
      "and the tokenizer files of the model it was trained from. transformers, vLLM and kto-ckpt\n"
      "forward load it unchanged. Works for checkpoints of any world size.");
  args.option("--checkpoint", &checkpoint, "DIR", "a checkpoint directory (run/checkpoints/step_...)",
              cli::required)
      .option("--out", &out_dir, "DIR", "output directory", cli::required)
      .option("--dtype", &dtype_name, "bf16|fp32", "stored weight dtype (default bf16)")
      .option("--max-shard-size", &max_shard_mb, "MB", "largest output file (default 5000)")
      .option("--tokenizer", &tokenizer, "FILE|DIR",
              "a tokenizer file (tokenizer.json, *.model) or a directory of tokenizer files to copy "
              "(default: the model's source directory)")
      .flag("--no-tokenizer", &no_tokenizer,
            "export without tokenizer files (else their absence is an error)");
  if (!args.parse(argc, argv, 2)) return 0;
  if (dtype_name != "bf16" && dtype_name != "fp32") throw cli::UsageError("--dtype: expected bf16 or fp32");
  if (no_tokenizer && !tokenizer.empty())
    throw cli::UsageError("--tokenizer and --no-tokenizer are exclusive");
  const at::ScalarType dtype = dtype_name == "bf16" ? at::kBFloat16 : at::kFloat;
  ckpt::Reader reader(checkpoint);
  const ckpt::Manifest& m = reader.manifest();
  // The tokenizer first: a missing one is an error before anything is written.
  std::vector<io::TokenizerFile> tokenizer_files;
  if (!no_tokenizer) {
    tokenizer_files =
        tokenizer.empty() ? io::tokenizer_files_in(m.model_source) : io::tokenizer_files_at(tokenizer);
    if (tokenizer_files.empty()) {
      throw Error(str_cat(checkpoint, ": ",
                          m.model_source.empty()
                              ? "a randomly initialised model has no source directory"
                              : "the model source " + m.model_source + " has no tokenizer files",
                          "; give --tokenizer FILE|DIR (the tokenizer the data was prepared with), or "
                          "--no-tokenizer to export the weights alone"));
    }
  }
  const auto problems = ckpt::verify(checkpoint, m);
  if (!problems.empty()) throw Error(checkpoint + ": " + problems.front());
  const model::ModelConfig cfg = model_config_of(m);
  const model::ModelLayout layout = model::ModelLayout::build(cfg);
  if (layout.units.size() != m.units.size())
    throw Error(checkpoint + ": the saved layout does not match its config");

  // Plan the output files in layout order, then fill them one at a time.
  struct Item {
    size_t unit;
    const model::ParamSpec* param;
  };
  std::vector<std::vector<Item>> files(1);
  int64_t file_bytes = 0, total_bytes = 0;
  const int64_t elem = dtype == at::kBFloat16 ? 2 : 4, limit = max_shard_mb * 1000 * 1000;
  for (size_t u = 0; u < layout.units.size(); ++u) {
    for (const model::ParamSpec& p : layout.units[u].params) {
      if (!files.back().empty() && file_bytes + p.numel * elem > limit) {
        files.emplace_back();
        file_bytes = 0;
      }
      files.back().push_back({u, &p});
      file_bytes += p.numel * elem;
      total_bytes += p.numel * elem;
    }
  }
  make_directories(out_dir);
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (size_t f = 0; f < files.size(); ++f) {
    char name[64];
    if (files.size() == 1) {
      std::snprintf(name, sizeof(name), "model.safetensors");
    } else {
      std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", f + 1, files.size());
    }
    io::NamedTensors tensors;
    for (const Item& it : files[f]) {
      at::Tensor values =
          at::empty({it.param->numel}, m.master_dtype == "float64" ? at::kDouble : at::kFloat);
      reader.read(it.unit, "param", it.param->offset, values);
      tensors.emplace_back(it.param->name, values.view(it.param->shape).to(dtype));
      weight_map.emplace_back(it.param->name, name);
    }
    io::write_safetensors(join_path(out_dir, name), tensors,
                          {{"format", "pt"}, {"kto_step", std::to_string(m.step)}});
  }
  if (files.size() > 1) io::write_safetensors_index(out_dir, weight_map, total_bytes);
  const std::string source = m.model_source;
  const std::string torch_dtype = io::hf_dtype_name(dtype);
  write_text_file(
      join_path(out_dir, "config.json"),
      !source.empty() && path_exists(join_path(source, "config.json"))
          ? model::hf_config_with_dtype(read_text_file(join_path(source, "config.json")), torch_dtype)
          : model::hf_config_json(cfg, torch_dtype));
  const int copied = io::copy_tokenizer_files(tokenizer_files, out_dir);
  log::info("export", "wrote ", out_dir, ": step ", m.step, ", ", files.size(), " weight file(s) (",
            dtype_name, "), ", copied, " tokenizer file(s)", no_tokenizer ? " (--no-tokenizer)" : "");
  return 0;
}

int ckpt_inspect(int argc, char** argv) {
  std::string checkpoint;
  cli::Args args("kto-ckpt inspect",
                 "Prints a checkpoint's step, world size, layouts and state, and verifies every\n"
                 "shard's size and sha256 (exit status 1 if one does not verify).");
  args.option("--checkpoint", &checkpoint, "DIR", "a checkpoint directory", cli::required);
  if (!args.parse(argc, argv, 2)) return 0;
  const ckpt::Manifest m = ckpt::read_manifest(checkpoint);
  std::printf("checkpoint %s\n  step %ld, world size %ld, created %s by %s\n", checkpoint.c_str(),
              static_cast<long>(m.step), static_cast<long>(m.world_size), m.created.c_str(),
              m.producer.c_str());
  if (m.shard_group_size != m.world_size) {
    std::printf("  hybrid sharding: %ld shards written by one of %ld shard groups (its replicas agreed)\n",
                static_cast<long>(m.shard_group_size), static_cast<long>(m.world_size / m.shard_group_size));
  }
  std::printf("  optimizer %s (%ld steps, %ld state tensors per unit), masters %s\n", m.optimizer.c_str(),
              static_cast<long>(m.optimizer_steps), static_cast<long>(m.state_tensors),
              m.master_dtype.c_str());
  std::printf("  data position: epoch %ld, example %ld of the epoch's order\n",
              static_cast<long>(m.sampler.epoch), static_cast<long>(m.sampler.position));
  std::printf("  model source: %s\n  reference: %s\n",
              m.model_source.empty() ? "(random init)" : m.model_source.c_str(),
              m.reference_identity.c_str());
  int64_t total = 0;
  for (const ckpt::UnitEntry& u : m.units) total += u.numel;
  std::printf("  %zu units, %ld parameters\n", m.units.size(), static_cast<long>(total));
  const auto problems = ckpt::verify(checkpoint, m);
  for (const ckpt::ShardEntry& s : m.shards)
    std::printf("  %s  %ld bytes  sha256 %s\n", s.file.c_str(), static_cast<long>(s.bytes), s.sha256.c_str());
  for (const std::string& p : problems) std::printf("  PROBLEM: %s\n", p.c_str());
  std::printf("  %s\n", problems.empty() ? "all shards verify" : "the checkpoint does NOT verify");
  return problems.empty() ? 0 : 1;
}

}  // namespace kto::apps
