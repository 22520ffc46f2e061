// The trainer: KTO (and the other HALOs) on the fully sharded policy and reference, for any
// world size. One optimizer step, as data flows (DESIGN §2):
//
//   for each of grad_accum microbatches of this rank:
//     KL pass       policy and reference log-probs of mismatched pairs (no grad)
//     z0            pooled over the global microbatch (one small all-reduce inside the loss)
//     log-probs     reference (no grad), policy (grad)
//     loss          HALO objective; backward of loss / grad_accum (gradients reduce-scattered)
//   clip the global gradient norm, optimizer step, learning-rate schedule
//   metrics (one all-reduce), progress line and metrics.jsonl on rank 0
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "kto/comm/communicator.h"
#include "kto/config/config.h"
#include "kto/data/loader.h"
#include "kto/fsdp/optimizer.h"
#include "kto/fsdp/sharded_model.h"
#include "kto/loss/halo.h"
#include "kto/train/metrics.h"

namespace kto::train {

class Trainer {
 public:
  // Loads models and data and checks everything that depends on the world size or the data
  // (batch divisibility, files, vocabulary); errors name the config key.
  Trainer(config::Config config, const comm::ProcessGroup& world);
  ~Trainer();

  // Trains for total_steps(), evaluating every train.eval_every steps and at the end, and
  // exports the final policy when train.export_final. Returns the last step's metrics.
  std::map<std::string, double> fit();
  std::map<std::string, double> train_step();
  // Loss, kl, rewards per class and accuracy on the eval files (collective).
  std::map<std::string, double> evaluate();

  int64_t step() const { return step_; }
  // True when fit() returned early on a stop request (a signal), after checkpointing.
  bool stopped() const { return stopped_; }
  int64_t total_steps() const { return total_steps_; }
  fsdp::ShardedModel& policy() { return *policy_; }
  const config::Config& config() const { return config_; }

 private:
  struct Forward {  // per-microbatch sequence log-probs
    at::Tensor logp, ref, kl_logp, kl_ref;
  };
  Forward forward(const data::Microbatch& mb, bool with_grad);
  loss::LossOutput objective(const data::Microbatch& mb, const Forward& f, loss::Reducer& reducer) const;
  void setup_models();
  void setup_data();
  void resume();
  void save_checkpoint();
  void export_final();
  // run.dir/status.json: {"state": "running" | "stopped" | "done", "step": N, "steps": total}
  // (rank 0), for job scripts and monitoring.
  void write_status(const char* state) const;
  void print_banner() const;
  std::string checkpoints_dir() const;

  config::Config config_;
  const comm::ProcessGroup& world_;
  std::shared_ptr<comm::Communicator> comm_;
  at::Device device_;
  std::unique_ptr<fsdp::ShardedModel> policy_, reference_;
  std::unique_ptr<fsdp::ShardedOptimizer> optimizer_;
  std::shared_ptr<data::Dataset> train_data_, eval_data_;
  std::unique_ptr<data::DataLoader> loader_;
  loss::LossOptions loss_;
  std::unique_ptr<loss::Reducer> reducer_;
  std::unique_ptr<MetricsLog> log_;
  std::string policy_config_json_;  // the HF config.json the policy came from, if any
  std::string reference_identity_;  // what the reference model is, checked on resume
  int64_t last_saved_step_ = -1;
  bool stopped_ = false;
  int64_t step_ = 0, total_steps_ = 0, grad_accum_ = 1, nonfinite_in_a_row_ = 0;
  double model_flops_per_token_ = 0, peak_flops_ = 0;
};

}  // namespace kto::train
