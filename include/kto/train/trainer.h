// The trainer: KTO (and the other HALOs) on the fully sharded policy and reference, for any
// world size. One optimizer step, as train_step() reads (DESIGN §2):
//
//   for each of grad_accum microbatches of this rank:
//     KL pass       policy and reference log-probs of mismatched pairs (no grad)
//     z0            this rank's KL (sum, count), all-reduced over the global microbatch
//     log-probs     reference (no grad), policy (grad)
//     loss          HALO objective(log-probs, reference log-probs, z0, labels, class weights);
//                   backward of loss / grad_accum (gradients reduce-scattered into the slices)
//   decide        loss and gradient norm finite on every rank (MIN), else skip the update
//   update        clip to the global gradient norm, optimizer step, learning-rate schedule
//   metrics (one all-reduce), progress line and metrics.jsonl on rank 0
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "kto/ckpt/checkpoint.h"
#include "kto/comm/communicator.h"
#include "kto/config/config.h"
#include "kto/data/loader.h"
#include "kto/fsdp/optimizer.h"
#include "kto/fsdp/sharded_model.h"
#include "kto/io/tokenizer_files.h"
#include "kto/loss/halo.h"
#include "kto/train/metrics.h"
#include "kto/train/resume_check.h"

namespace kto::train {

// The local rank's device: its GPU (the local rank-th of the visible ones, or the one visible),
// else the CPU.
at::Device pick_device(const comm::ProcessGroup& world);
// The sharding options of model.* on `device`.
fsdp::FsdpOptions fsdp_options(const config::ModelSection& model, at::Device device);
// The frozen reference of a run (model.reference_path, else model.path, else the policy's random
// initialisation), sharded as `mesh` says (within each shard group, like the policy).
std::unique_ptr<fsdp::ShardedModel> load_reference(const config::Config& config,
                                                   const model::ModelConfig& policy,
                                                   std::shared_ptr<const fsdp::Mesh> mesh, at::Device device);

// A microbatch's token batch as the sharded model takes it.
fsdp::ShardedModel::Batch model_batch(const data::TokenBatch& batch);

class Trainer {
 public:
  // Validates the config, checks that the data files exist, opens them (token ids checked
  // against the model's vocabulary), checks the run against them (check_run: batch
  // decomposition, loss vs data, class weights; errors name the config key), loads the models
  // and resumes.
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
  // True when fit() gave up after train.max_nonfinite_steps consecutive skipped steps (every
  // rank alike; nothing saved, status.json says "failed").
  bool failed() const { return failed_; }
  int64_t total_steps() const { return total_steps_; }
  // Model FLOPs per training token (KTO 12N, 8N on precomputed scores; N without the embedding
  // lookup; see setup_models) and the job's matmul
  // peak in FLOP/s (train.peak_gflops per rank, or measured at start-up), which MFU divides by.
  double model_flops_per_token() const { return model_flops_per_token_; }
  double peak_flops() const { return peak_flops_; }
  // This rank's matmul peak measured now, GFLOP/s, the way start-up measures it (not collective):
  // for a benchmark to put a second divisor beside the start-up one, so that a machine whose
  // speed drifts between start-up and the timed steps shows it.
  double measure_peak_gflops_now() const;
  fsdp::ShardedModel& policy() { return *policy_; }
  // This rank's collectives so far, the policy's and the reference model's together.
  fsdp::CommStats comm_stats() const;
  const config::Config& config() const { return config_; }

 private:
  struct LogProbs {  // per-sequence completion log-prob sums of one microbatch
    at::Tensor policy, reference;
    at::Tensor kl;  // KL_i = log pi(y'_i|x_i) - log pi_ref(y'_i|x_i) of the mismatched pairs, when asked
  };
  struct ReferenceLogProbs {  // of the target batch and (when asked) of the KL batch
    at::Tensor target, kl;
  };
  // Precomputed ones from the data, or the reference model's: one walk of its units over the
  // target and KL batches (each reference unit gathered once). No grad. Empty when the loss
  // uses no reference and no KL batch is asked for.
  ReferenceLogProbs reference_logprobs(const data::Microbatch& mb, bool with_kl);
  // The policy's target log-probs (with grad when asked) beside the reference's, and with
  // ref.kl defined the KL terms (no grad): both batches in one walk of the policy's units (each
  // gathered once in the forward), the KL batch continuing the target's prompts when shared.
  LogProbs policy_logprobs(const data::Microbatch& mb, const ReferenceLogProbs& ref, bool with_grad);
  // Matmul FLOPs a training microbatch executes on this rank (model::ModelConfig::forward_flops
  // of each forward it runs: the positions computed, padding included; the LM head on scored
  // positions only; the policy backward twice its forward plus the logits recomputed; the
  // recompute of reshard_after_forward).
  double executed_flops(const data::Microbatch& mb, bool with_kl) const;
  loss::LossOutput objective(const data::Microbatch& mb, const LogProbs& lp, const at::Tensor& z0) const;
  at::Tensor zero_z0() const;
  void setup_models(const model::ModelConfig& config);
  // fit()'s phases: the start (config.yaml, banner, status), an eval, a stop on request, giving
  // up on non-finite steps, the end.
  void start_run();
  bool eval_due() const;
  void log_evaluation();
  // eval.samples: due at this step (step 0, the end, every eval.sample_every-th evaluation), and
  // written (collective: the models are gathered; rank 0 generates and appends samples.jsonl).
  bool samples_due() const;
  void write_samples();
  void stop_run();
  void fail_run();
  void finish_run();
  void resume();
  // What the run trains on, recorded in checkpoints and compared on resume (resume_check.h):
  // model.architecture, model.reference, data.tokenizer, data.train[i], data.eval[i].
  RunFacts identity() const;
  // Refuses (kto::Error, every rank alike) a resume that would change the experiment.
  void check_resume(const ckpt::Manifest& manifest, const std::string& dir);
  at::ScalarType export_dtype() const;  // train.export_dtype resolved
  // run.dir/segments.jsonl: one line per started segment of the run (a resume starts one), its
  // line rewritten at every checkpoint and at the end (rank 0).
  void write_segment(const char* state) const;
  void save_checkpoint();
  void export_final();
  // run.dir/status.json: {"state": "running" | "stopped" | "failed" | "done", "step": N, "steps": total}
  // (rank 0), for job scripts and monitoring.
  void write_status(const char* state) const;
  void print_banner() const;
  std::string checkpoints_dir() const;

  config::Config config_;
  const comm::ProcessGroup& world_;
  std::shared_ptr<comm::Communicator> comm_;  // the world's: z0, metrics, decisions
  std::shared_ptr<const fsdp::Mesh> mesh_;    // shard groups and replica sets (dist.shard_group)
  at::Device device_;
  std::unique_ptr<fsdp::ShardedModel> policy_, reference_;
  std::unique_ptr<fsdp::ShardedOptimizer> optimizer_;
  std::shared_ptr<data::Dataset> train_data_, eval_data_;
  std::unique_ptr<data::DataLoader> loader_;
  loss::LossOptions loss_;  // the config's, class weights resolved
  std::unique_ptr<MetricsLog> log_;
  std::string policy_config_json_;         // the HF config.json the policy came from, if any
  std::string reference_identity_;         // what the reference model is, checked on resume
  std::string reference_content_;          // the same without the path (a moved directory is the same)
  std::vector<RunChange> resume_changes_;  // the changes this segment's resume accepted
  std::vector<io::TokenizerFile> export_tokenizer_;  // what final/ gets
  int64_t segment_ = 0, segment_start_step_ = 0;
  std::string segment_started_;       // UTC
  double segment_start_seconds_ = 0;  // steady clock
  int64_t last_saved_step_ = -1;
  bool stopped_ = false, failed_ = false;
  bool precomputed_ = false;            // reference log-probs from the data (RunPlan::precomputed)
  std::vector<int64_t> eval_partners_;  // pairing fixed: the eval set's KL partners (drawn once)
  int64_t step_ = 0, total_steps_ = 0, grad_accum_ = 1, nonfinite_in_a_row_ = 0;
  double model_flops_per_token_ = 0, peak_flops_ = 0;
};

}  // namespace kto::train
