// The typed configuration of a kto run: one struct per component, parsed and validated in one
// place (STYLE 9). The data, loss and optimizer sections are those components' own option
// structs (kto/data/options.h, kto/loss/options.h, kto/fsdp/optimizer_options.h); choices are
// enums, parsed from their names once (kto/util/choice.h). Every struct lists its keys once, in visit();
// reading YAML, applying
// `--set a.b=value` overrides, dumping the resolved config and generating the reference docs
// all walk that same list, so they cannot drift apart.
//
// Errors name the file, the line and the full key: unknown keys (with a did-you-mean), wrong
// types, missing required keys and inconsistent values are all kto::ConfigError.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kto/data/options.h"
#include "kto/fsdp/optimizer_options.h"
#include "kto/loss/options.h"
#include "kto/model/model_config.h"
#include "kto/util/choice.h"
#include "kto/util/log.h"

namespace kto::config {

// Compute dtype of forward and backward passes.
enum class Dtype { fp32, bf16, fp64 };
inline constexpr ChoiceTable<Dtype, 3> kDtypes{
    {{Dtype::fp32, "fp32"}, {Dtype::bf16, "bf16"}, {Dtype::fp64, "fp64"}}};
inline const char* name(Dtype d) { return choice_name(kDtypes, d); }
// Bytes per element.
inline int dtype_bytes(Dtype d) { return d == Dtype::bf16 ? 2 : d == Dtype::fp64 ? 8 : 4; }

struct ModelSection {
  std::string path;            // Hugging Face directory; empty = random init from `architecture`
  std::string reference_path;  // empty: the reference is the initial policy
  Dtype dtype = Dtype::fp32;   // compute dtype
  model::ModelConfig architecture;
  int64_t init_seed = 1234;
  double init_std = 0.02;
  bool reshard_after_forward = true;
  bool prefetch = true;

  // The reference's directory: reference_path, else path (empty: the random initialisation).
  const std::string& reference_dir() const { return reference_path.empty() ? path : reference_path; }

  template <class V>
  void visit(V& v) {
    v.field("path", path,
            "Hugging Face checkpoint directory (config.json + *.safetensors); empty: random init from "
            "`architecture`");
    v.field("reference_path", reference_path,
            "reference model directory; empty: a frozen copy of the initial policy");
    v.choice("dtype", dtype, kDtypes,
             "compute dtype of the forward and backward passes (master weights stay fp32)");
    v.section("architecture", architecture, "architecture of a randomly initialised model (tests, demo)");
    v.field("init_seed", init_seed, "seed of the random initialisation");
    v.field("init_std", init_std, "standard deviation of random weight matrices");
    v.field("reshard_after_forward", reshard_after_forward,
            "free gathered units after forward and recompute them in backward (less memory)");
    v.field("prefetch", prefetch, "overlap the next unit's all-gather with compute");
  }
};

// Whether the reference's log-probs come from the data (kto-train --score-reference) instead of a
// live reference model: auto when the training data carries them, true requires them, false
// ignores them.
enum class Precomputed { auto_, yes, no };
inline constexpr ChoiceTable<Precomputed, 3> kPrecomputed{
    {{Precomputed::auto_, "auto"}, {Precomputed::yes, "true"}, {Precomputed::no, "false"}}};

struct ReferenceSection {
  Precomputed precomputed = Precomputed::auto_;

  template <class V>
  void visit(V& v) {
    v.choice("precomputed", precomputed, kPrecomputed,
             "use the data's reference scores (kto-train --score-reference) and load no reference model: "
             "auto (when data.train has them), true (required) or false (a live reference)");
  }
};

enum class Decay { constant, linear, cosine };
inline constexpr ChoiceTable<Decay, 3> kDecays{
    {{Decay::constant, "constant"}, {Decay::linear, "linear"}, {Decay::cosine, "cosine"}}};

struct ScheduleSection {
  int64_t warmup_steps = 0;
  Decay decay = Decay::constant;
  double min_lr_ratio = 0.0;

  template <class V>
  void visit(V& v) {
    v.field("warmup_steps", warmup_steps, "linear warmup from 0 over this many steps");
    v.choice("decay", decay, kDecays, "learning-rate shape after warmup");
    v.field("min_lr_ratio", min_lr_ratio, "final learning rate as a fraction of lr (linear, cosine)");
  }
};

struct TrainSection {
  int64_t steps = 0;  // 0: derived from epochs
  double epochs = 1.0;
  int64_t eval_every = 0;  // 0: only at the end
  int64_t log_every = 1;
  int64_t max_nonfinite_steps = 3;
  bool export_final = true;
  std::string export_dtype = "auto";      // auto | fp32 | bf16
  std::string export_tokenizer = "auto";  // auto | none | a tokenizer file or directory
  bool eval_at_start = true;
  double peak_gflops = 0;  // per rank; 0: measured at start-up

  template <class V>
  void visit(V& v) {
    v.field("steps", steps, "optimizer steps; 0: derived from epochs");
    v.field("epochs", epochs, "passes over the training data when steps is 0");
    v.field("eval_every", eval_every, "evaluate every this many steps (0: only at the end)");
    v.field("log_every", log_every, "progress line every this many steps");
    v.field("max_nonfinite_steps", max_nonfinite_steps,
            "stop after this many consecutive steps with a non-finite loss or gradient");
    v.field("export_final", export_final,
            "write the trained policy as a Hugging Face directory in run.dir/final");
    v.field("export_dtype", export_dtype,
            "weight dtype of final/: auto (that of model.path's config.json torch_dtype; fp32 for a random "
            "init), fp32 or bf16");
    v.field("export_tokenizer", export_tokenizer,
            "tokenizer files for final/: auto (model.path's, else the file the training data was prepared "
            "with, found by its recorded path and sha256), none, or a tokenizer file or directory");
    v.field("eval_at_start", eval_at_start,
            "evaluate before the first step (step 0: the starting point of every eval curve)");
    v.field("peak_gflops", peak_gflops,
            "per-rank peak GFLOP/s for MFU; 0: measure the matmul peak at start-up");
  }
};

struct CheckpointSection {
  int64_t every = 0;  // 0: only at the end
  int64_t keep = 3;
  std::string dir;                        // empty: run.dir/checkpoints
  std::string resume = "auto";            // auto | never | a checkpoint directory
  std::vector<std::string> allow_change;  // keys resuming may change besides resumable_keys()

  template <class V>
  void visit(V& v) {
    v.field("every", every, "save a checkpoint every this many steps (0: only at the end)");
    v.field("keep", keep, "keep the newest this many checkpoints");
    v.field("dir", dir, "checkpoint directory; empty: run.dir/checkpoints");
    v.field("resume", resume,
            "auto (newest complete checkpoint in dir, if any), never, or a checkpoint directory");
    v.field("allow_change", allow_change,
            "config keys (or sections) a resumed run may change besides the always-allowed ones "
            "(docs/checkpoints.md); kto-train --allow-change KEY adds to it");
  }
};

struct RunSection {
  std::string dir = "runs/kto";
  int64_t threads = 0;  // 0: OMP_NUM_THREADS, else all cores
  log::Level log_level = log::Level::info;
  bool check_memory = true;

  template <class V>
  void visit(V& v) {
    v.field("dir", dir, "run directory: metrics, checkpoints, resolved config");
    v.field("threads", threads,
            "CPU threads per rank for LibTorch (0: OMP_NUM_THREADS or the cores / ranks on the host)");
    v.choice("log_level", log_level, log::kLevels, "log verbosity");
    v.field("check_memory", check_memory,
            "refuse to start when the estimated memory of the ranks on a host exceeds its physical memory "
            "(false: try anyway)");
  }
};

// Samples during evaluation (docs/training.md): what the policy writes for fixed eval prompts.
struct EvalSection {
  int64_t samples = 0;  // 0: none
  int64_t sample_every = 1;
  int64_t max_new_tokens = 64;
  double temperature = 0;  // 0: greedy
  double top_p = 1.0;
  int64_t seed = 0;

  template <class V>
  void visit(V& v) {
    v.field("samples", samples,
            "eval prompts (the first of data.eval) the policy completes at evaluations, into "
            "run.dir/samples.jsonl "
            "and the report; 0: none");
    v.field("sample_every", sample_every,
            "sample at every this-many-th evaluation (and always at step 0 and at the end)");
    v.field("max_new_tokens", max_new_tokens, "new tokens per sample at most (EOS ends one earlier)");
    v.field("temperature", temperature, "sampling temperature; 0: greedy (the most likely token)");
    v.field("top_p", top_p, "nucleus sampling: the fewest most likely tokens reaching this probability");
    v.field("seed", seed, "sampling seed (the same at every evaluation, so the steps compare)");
  }
};

// How the ranks share the model (docs/distributed.md).
struct DistSection {
  std::string shard_group = "world";  // world | node | N (fsdp/shard_group.h)

  template <class V>
  void visit(V& v) {
    v.field("shard_group", shard_group,
            "ranks one copy of the model is sharded over: world (every rank; full sharding), node (the ranks "
            "of one host; hybrid sharding: replicated across hosts, gradients all-reduced across them once "
            "per step) or N (consecutive groups of N ranks)");
  }
};

struct Config {
  ModelSection model;
  ReferenceSection reference;
  data::DataOptions data;
  loss::LossOptions loss;
  fsdp::OptimizerOptions optim;
  ScheduleSection schedule;
  TrainSection train;
  CheckpointSection ckpt;
  RunSection run;
  DistSection dist;
  EvalSection eval;

  template <class V>
  void visit(V& v) {
    v.section("model", model, "policy (and reference) model");
    v.section("reference", reference, "where the reference log-probs come from");
    v.section("data", data, "datasets and batching");
    v.section("loss", loss, "the objective");
    v.section("optim", optim, "optimizer");
    v.section("schedule", schedule, "learning-rate schedule");
    v.section("train", train, "training loop");
    v.section("ckpt", ckpt, "checkpoints and resume");
    v.section("run", run, "run directory and process settings");
    v.section("dist", dist, "how the ranks share the model");
    v.section("eval", eval, "samples the policy generates during evaluation");
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
// A resolved config (dump_config's YAML) as flat keys and values: "loss.beta" -> "0.1",
// "data.train" -> "[a.h5, b.h5]". Keys this kto knows that `yaml_text` lacks (a config an older
// kto wrote) take their defaults. Throws kto::ConfigError naming `source` if it is not YAML.
std::map<std::string, std::string> flatten_config(const std::string& yaml_text, const std::string& source);
// Markdown table of every key: name, type, default, description.
std::string config_reference_markdown();

}  // namespace kto::config
