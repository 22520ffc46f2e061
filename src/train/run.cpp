// A run's life around the training loop: the start (resolved config, banner, status), resume,
// checkpoints, the stop on a signal, the end (final checkpoint, export, report).
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>

#include "kto/ckpt/checkpoint.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/train/report.h"
#include "kto/train/trainer.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/log.h"
#include "kto/util/memory.h"
#include "kto/util/process.h"
#include "kto/util/signals.h"
#include "kto/util/version.h"

namespace kto::train {

using detail::str_cat;

void Trainer::start_run() {
  if (world_.is_root()) {
    make_directories(config_.run.dir);
    write_text_file(join_path(config_.run.dir, "config.yaml"), config::dump_config(config_));
  }
  print_banner();
  write_status("running");
}

void Trainer::stop_run() {
  log::end_status();
  if (world_.is_root()) write_report(config_.run.dir);
  write_status("stopped");
  log::info("train", "stopping at step ", step_, " on request (signal ", signals::stop_signal(),
            "); checkpoint saved, exit status ", signals::kExitStopped);
  stopped_ = true;
}

void Trainer::fail_run() {
  log::end_status();
  log::error(
      "train", "stopping: ", nonfinite_in_a_row_,
      " consecutive steps with a non-finite loss or gradient norm (train.max_nonfinite_steps); none of "
      "them updated the weights, which are those after step ",
      step_ - nonfinite_in_a_row_, "; lower optim.lr or check the data");
  if (world_.is_root()) write_report(config_.run.dir);
  write_status("failed");
  failed_ = true;
}

void Trainer::finish_run() {
  log::end_status();
  if (last_saved_step_ != step_) save_checkpoint();
  if (config_.train.export_final) export_final();
  write_status("done");
  if (world_.is_root()) {
    const std::string report = write_report(config_.run.dir);
    log::info("train", "report: ", report);
  }
  log::info("train", "done: ", step_, " steps; metrics in ", log_->path());
}

void Trainer::print_banner() const {
  const model::ModelConfig& mc = policy_->config();
  // Per-rank facts, gathered and printed in rank order.
  const auto ranks =
      world_.all_gather(str_cat(process_identity().host, ", ", device_.str(), ", ", at::get_num_threads(),
                                " thread(s), local rank ", world_.local_rank()));
  const config::ModelSection& m = config_.model;
  const double per_rank = fsdp::training_bytes_per_rank(
      mc, policy_->layout(), world_.size(), config::dtype_bytes(m.dtype), config_.optim.state_tensors(),
      reference_ != nullptr, m.reshard_after_forward);

  // The same facts go to the log and to run.json, which the report shows.
  std::vector<std::pair<std::string, std::string>> facts;
  auto fact = [&](const std::string& key, const std::string& value) {
    log::info("train", key, ": ", value);
    facts.emplace_back(key, value);
  };
  fact("build", build_summary());
  fact("world", str_cat(world_.size(), " rank(s), ", comm_->backend(), " collectives"));
  for (size_t r = 0; r < ranks.size(); ++r) fact(str_cat("  rank ", r), ranks[r]);
  fact("model", str_cat(model::name(mc.arch), ", ",
                        scaled_text(static_cast<double>(mc.num_parameters()), 1000, {"", "K", "M", "B", "T"}),
                        " parameters, ", config::name(m.dtype), " compute, ",
                        m.reshard_after_forward ? "resharded" : "kept", " units"));
  fact("memory", str_cat("~", human_bytes(per_rank), " per rank for weights, gradients, optimizer state",
                         reference_ ? ", reference" : "", " and gathered units (activations extra)"));
  fact("data", str_cat(train_data_->size(), " examples (", train_data_->count(true), " desirable, ",
                       train_data_->count(false), " undesirable)", train_data_->paired() ? ", paired" : "",
                       eval_data_ ? str_cat("; eval ", eval_data_->size(), " examples") : ""));
  fact("batch", str_cat("global ", loader_->global_batch(), " = ", config_.data.micro_batch, " x ",
                        grad_accum_, " x ", world_.size(), "; ", total_steps_, " steps",
                        step_ > 0 ? str_cat(", resuming at step ", step_) : ""));
  fact("loss", str_cat(loss::name(loss_.name), ": beta ", loss_.beta, ", lambda_D ",
                       loss_.desirable_weight.value, ", lambda_U ", loss_.undesirable_weight.value, ", z0 ",
                       choice_name(loss::kEstimators, loss_.estimator), ", pairs ",
                       choice_name(data::kPairings, config_.data.pairing), "/",
                       choice_name(data::kPairScopes, config_.data.pair_scope)));
  if (const char* job = std::getenv("SLURM_JOB_ID")) {
    const char* restarts = std::getenv("SLURM_RESTART_COUNT");
    fact("slurm job", str_cat(job, restarts ? str_cat(" (restart ", restarts, ")") : ""));
  }
  if (world_.is_root()) write_run_facts(config_.run.dir, facts);
}

void Trainer::write_status(const char* state) const {
  if (!world_.is_root()) return;
  write_text_file(
      join_path(config_.run.dir, "status.json"),
      str_cat("{\"state\": \"", state, "\", \"step\": ", step_, ", \"steps\": ", total_steps_, "}\n"));
}

std::string Trainer::checkpoints_dir() const {
  return config_.ckpt.dir.empty() ? join_path(config_.run.dir, "checkpoints") : config_.ckpt.dir;
}

void Trainer::resume() {
  const std::string& mode = config_.ckpt.resume;
  if (mode == "never") return;
  std::string dir;
  if (mode == "auto") {
    dir = ckpt::find_latest(checkpoints_dir(), world_);
    if (dir.empty()) return;  // a fresh start
  } else {
    dir = mode;
    const auto problems = ckpt::verify(dir, ckpt::read_manifest(dir), world_.size(), world_.rank());
    for (const std::string& p : problems) log::error("ckpt", p);
    if (!world_.all_true(problems.empty()))
      throw Error("ckpt.resume: " + dir + " does not verify (see above)");
  }
  const ckpt::Manifest manifest = ckpt::read_manifest(dir);
  if (manifest.reference_identity != reference_identity_) {
    throw Error(str_cat("cannot resume from ", dir, ": it was trained against the reference '",
                        manifest.reference_identity, "', this run's reference is '", reference_identity_,
                        "' (model.path / reference_path changed?)"));
  }
  const ckpt::TrainingState state = ckpt::load(dir, *policy_, *optimizer_, world_);
  step_ = state.step;
  // Already saved if it came from this run's own checkpoint directory; a checkpoint from
  // elsewhere (another world size, another run) is saved here again at the end.
  const std::string parent = dir.substr(0, dir.find_last_of('/'));
  if (parent == checkpoints_dir()) last_saved_step_ = state.step;
  loader_->restore(state.sampler);
  if (manifest.world_size != world_.size() && config_.data.global_batch == 0) {
    log::warn("ckpt", "resumed on ", world_.size(), " ranks from ", manifest.world_size,
              " without data.global_batch: the global batch changes with the world size");
  }
  log_->rewind(step_);  // metrics.jsonl continues from the checkpoint
}

void Trainer::save_checkpoint() {
  ckpt::SaveRequest request;
  request.checkpoints_dir = checkpoints_dir();
  request.state = {step_, loader_->state()};
  request.config_yaml = config::dump_config(config_);
  request.reference_identity = reference_identity_;
  request.model_source = config_.model.path;
  request.keep = config_.ckpt.keep;
  ckpt::save(request, *policy_, *optimizer_, world_);
  last_saved_step_ = step_;
}

void Trainer::export_final() {
  const std::vector<at::Tensor> units = policy_->gather_full_units();  // collective
  if (!world_.is_root()) return;
  const std::string dir = join_path(config_.run.dir, "final");
  io::save_hf_model(dir, policy_->config(), policy_->layout(), units, at::kFloat, policy_config_json_);
  log::info("train", "wrote the trained policy to ", dir);
}

}  // namespace kto::train
