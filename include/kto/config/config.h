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
  std::string reference_path;  // empty: the reference is the initial policy
  std::string dtype = "fp32";  // compute dtype
  model::ModelConfig architecture;
  int64_t init_seed = 1234;
  double init_std = 0.02;
  bool reshard_after_forward = true;
  bool prefetch = true;

  template <class V>
  void visit(V& v) {
    v.field("path", path,
            "Hugging Face checkpoint directory (config.json + *.safetensors); empty: random init from "
            "`architecture`");
    v.field("reference_path", reference_path,
            "reference model directory; empty: a frozen copy of the initial policy");
    v.choice("dtype", dtype, {"fp32", "bf16", "fp64"},
             "compute dtype of the forward and backward passes (master weights stay fp32)");
    v.section("architecture", architecture, "architecture of a randomly initialised model (tests, demo)");
    v.field("init_seed", init_seed, "seed of the random initialisation");
    v.field("init_std", init_std, "standard deviation of random weight matrices");
    v.field("reshard_after_forward", reshard_after_forward,
            "free gathered units after forward and recompute them in backward (less memory)");
    v.field("prefetch", prefetch, "overlap the next unit's all-gather with compute");
  }
};

struct DataSection {
  std::vector<std::string> train;  // HDF5 files from kto-data prepare
  std::vector<std::string> eval;
  int64_t micro_batch = 4;   // examples (pairs for paired losses) per rank per forward
  int64_t global_batch = 0;  // 0: micro_batch * grad_accum * world size
  int64_t grad_accum = 1;
  int64_t seed = 0;
  std::string pairing = "next";
  std::string pair_scope = "global";
  int64_t pad_to_multiple_of = 8;

  template <class V>
  void visit(V& v) {
    v.field("train", train, "training dataset files (kto-data prepare output; several shards allowed)");
    v.field("eval", eval, "held-out dataset files (empty: no eval)");
    v.field("micro_batch", micro_batch,
            "examples per rank per forward pass (pairs for paired losses); KTO needs >= 2");
    v.field("global_batch", global_batch,
            "examples per optimizer step over all ranks; 0: micro_batch * grad_accum * world size");
    v.field("grad_accum", grad_accum,
            "microbatches per optimizer step (derived from global_batch when that is set)");
    v.field("seed", seed, "seed of the per-epoch shuffles");
    v.choice("pairing", pairing, {"next", "prev", "reverse"},
             "KL mismatched pairs: the completion of (i+1), (i-1) or (n-1-i)");
    v.choice("pair_scope", pair_scope, {"global", "rank"},
             "pair within the global microbatch (world-size invariant) or within each rank's (TRL, HALOs)");
    v.field("pad_to_multiple_of", pad_to_multiple_of,
            "round padded sequence lengths up to a multiple of this");
  }
};

struct LossSection {
  std::string name = "kto";
  double beta = 0.1;
  std::string desirable_weight = "1";  // a number or "auto"
  std::string undesirable_weight = "1";
  std::string estimator = "pooled";
  double cdpo_epsilon = 0.2, ipo_tau = 0.1, simpo_gamma_beta_ratio = 0.5, slic_margin = 1.0,
         slic_lambda = 0.1;

  template <class V>
  void visit(V& v) {
    v.choice("name", name,
             {"kto", "kto_logsigmoid", "kto_zero", "apo_zero", "sft", "csft", "dpo", "cdpo", "ipo", "simpo",
              "slic"},
             "the objective (paired losses need data prepared with --keep-pairs)");
    v.field("beta", beta, "KTO/DPO temperature beta");
    v.field("desirable_weight", desirable_weight,
            "lambda_D: a number, or auto (the paper's rule from the class counts)");
    v.field("undesirable_weight", undesirable_weight, "lambda_U: a number, or auto");
    v.choice(
        "estimator", estimator, {"pooled", "trl", "halos"},
        "z0 estimator: pooled over the global microbatch, TRL's mean of rank means, HALOs' nonzero mean");
    v.field("cdpo_epsilon", cdpo_epsilon, "cDPO label smoothing");
    v.field("ipo_tau", ipo_tau, "IPO tau");
    v.field("simpo_gamma_beta_ratio", simpo_gamma_beta_ratio, "SimPO gamma / beta");
    v.field("slic_margin", slic_margin, "SLiC calibration margin");
    v.field("slic_lambda", slic_lambda, "SLiC weight of the chosen-completion NLL");
  }
};

struct OptimSection {
  std::string name = "adamw";
  double lr = 5e-6;
  double beta1 = 0.9, beta2 = 0.999, alpha = 0.99, eps = 1e-8;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;

  template <class V>
  void visit(V& v) {
    v.choice("name", name, {"adamw", "rmsprop"}, "optimizer (the paper's HALOs recipe uses rmsprop)");
    v.field("lr", lr, "peak learning rate");
    v.field("beta1", beta1, "AdamW beta1");
    v.field("beta2", beta2, "AdamW beta2");
    v.field("alpha", alpha, "RMSprop smoothing constant");
    v.field("eps", eps, "epsilon");
    v.field("weight_decay", weight_decay, "weight decay (AdamW decoupled; not on norms and biases)");
    v.field("max_grad_norm", max_grad_norm, "clip the global gradient norm to this (0: no clipping)");
  }
};

struct ScheduleSection {
  int64_t warmup_steps = 0;
  std::string decay = "constant";
  double min_lr_ratio = 0.0;

  template <class V>
  void visit(V& v) {
    v.field("warmup_steps", warmup_steps, "linear warmup from 0 over this many steps");
    v.choice("decay", decay, {"constant", "linear", "cosine"}, "learning-rate shape after warmup");
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
    v.field("peak_gflops", peak_gflops,
            "per-rank peak GFLOP/s for MFU; 0: measure the matmul peak at start-up");
  }
};

struct CheckpointSection {
  int64_t every = 0;  // 0: only at the end
  int64_t keep = 3;
  std::string dir;              // empty: run.dir/checkpoints
  std::string resume = "auto";  // auto | never | a checkpoint directory

  template <class V>
  void visit(V& v) {
    v.field("every", every, "save a checkpoint every this many steps (0: only at the end)");
    v.field("keep", keep, "keep the newest this many checkpoints");
    v.field("dir", dir, "checkpoint directory; empty: run.dir/checkpoints");
    v.field("resume", resume,
            "auto (newest complete checkpoint in dir, if any), never, or a checkpoint directory");
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
  DataSection data;
  LossSection loss;
  OptimSection optim;
  ScheduleSection schedule;
  TrainSection train;
  CheckpointSection ckpt;
  RunSection run;

  template <class V>
  void visit(V& v) {
    v.section("model", model, "policy (and reference) model");
    v.section("data", data, "datasets and batching");
    v.section("loss", loss, "the objective");
    v.section("optim", optim, "optimizer");
    v.section("schedule", schedule, "learning-rate schedule");
    v.section("train", train, "training loop");
    v.section("ckpt", ckpt, "checkpoints and resume");
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
