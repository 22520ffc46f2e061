// Per-step training metrics: accumulated on the device per microbatch, all-reduced once per
// step, logged by rank 0 as a progress line and a metrics.jsonl record. A class absent from a
// step reports no value (the key is left out), never NaN or a made-up 0.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdio>
#include <map>
#include <optional>
#include <string>

#include "kto/comm/communicator.h"
#include "kto/data/batch.h"
#include "kto/loss/halo.h"

namespace kto::train {

// Sums over a step's microbatches (one rank), then over ranks.
class StepSums {
 public:
  explicit StepSums(at::Device device);
  // One microbatch: its loss output, its reference point z0 (0 without one), the policy
  // log-probs and the matmul FLOPs its forwards and backward executed on this rank.
  void add(const data::Microbatch& mb, const loss::LossOutput& out, const at::Tensor& z0,
           const at::Tensor& policy_logps, double executed_flops);
  // Whether this rank's summed loss is finite (one host copy; before reduce()).
  bool loss_is_finite() const;
  // All-reduces and returns the named metrics (loss, kl, rewards/..., logps/..., count/...,
  // tokens, padding, executed_flops). Collective.
  std::map<std::string, double> reduce(comm::Communicator& comm);

 private:
  at::Tensor sums_;  // fp64 on the compute device
};

// Rank 0's output: metrics.jsonl (one JSON object per line) and the progress line.
class MetricsLog {
 public:
  MetricsLog(const std::string& run_dir, bool is_root);
  ~MetricsLog();
  void write(const std::map<std::string, double>& values,
             const std::map<std::string, std::string>& labels = {});
  const std::string& path() const { return path_; }
  // A resumed run continues from its checkpoint at `step`: records of later (lost) steps are
  // dropped, and so is a last line cut short by a crash; every other line stays as it was.
  void rewind(int64_t step);

 private:
  std::string path_;
  FILE* file_ = nullptr;
};

// "step 40: loss 0.4923, balanced accuracy 0.543, accuracy+ 0.6154, ..., AUC 0.5656, ...": the
// eval metrics present in `e` (from Trainer::evaluate()).
std::string eval_line(const std::map<std::string, double>& e, int64_t step);

// "step 12/100 | loss 0.4953 | kl 0.0123 | rew+ 0.051 | rew- -0.023 | ..."
std::string progress_line(const std::map<std::string, double>& m, int64_t step, int64_t total,
                          double eta_seconds);

}  // namespace kto::train
