// A run's life around the training loop: the start (resolved config, banner, status), resume,
// checkpoints, the stop on a signal, the end (final checkpoint, export, report).
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "kto/ckpt/checkpoint.h"
#include "kto/comm/process_group.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/model/hf_config.h"
#include "kto/train/report.h"
#include "kto/train/run_plan.h"
#include "kto/train/trainer.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/json.h"
#include "kto/util/log.h"
#include "kto/util/memory.h"
#include "kto/util/process.h"
#include "kto/util/sha256.h"
#include "kto/util/signals.h"
#include "kto/util/version.h"

namespace kto::train {

using detail::str_cat;

namespace {

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string segments_path(const std::string& run_dir) { return join_path(run_dir, "segments.jsonl"); }

// configs/segment_NNN.yaml, relative to the run directory.
std::string segment_config(int64_t segment) {
  char name[48];
  std::snprintf(name, sizeof(name), "configs/segment_%03ld.yaml", static_cast<long>(segment));
  return name;
}

// The records of segments.jsonl (a damaged line is dropped: it is only history).
std::vector<nlohmann::json> read_segments(const std::string& run_dir) {
  std::vector<nlohmann::json> records;
  const std::string path = segments_path(run_dir);
  if (!path_exists(path)) return records;
  const std::string text = read_text_file(path);
  for (size_t start = 0; start < text.size();) {
    const size_t end = std::min(text.find('\n', start), text.size());
    try {
      nlohmann::json j = parse_json(std::string_view(text).substr(start, end - start), path);
      if (j.is_object()) records.push_back(std::move(j));
    } catch (const Error&) {
    }
    start = end + 1;
  }
  return records;
}

}  // namespace

void Trainer::start_run() {
  segment_start_step_ = step_;
  segment_started_ = utc_now();
  segment_start_seconds_ = steady_seconds();
  if (world_.is_root()) {
    // The history: one resolved config per segment (configs/segment_NNN.yaml) and config.yaml,
    // the latest segment's. Written only now that the run starts: a refused resume leaves both.
    make_directories(join_path(config_.run.dir, "configs"));
    segment_ = static_cast<int64_t>(read_segments(config_.run.dir).size());
    const std::string yaml = config::dump_config(config_);
    write_text_file(join_path(config_.run.dir, segment_config(segment_)), yaml);
    write_text_file(join_path(config_.run.dir, "config.yaml"), yaml);
  }
  print_banner();
  write_status("running");
}

void Trainer::write_segment(const char* state) const {
  if (!world_.is_root()) return;
  nlohmann::json j = {{"segment", segment_},
                      {"start_step", segment_start_step_},
                      {"end_step", step_},
                      {"started", segment_started_},
                      {"wall_s", steady_seconds() - segment_start_seconds_},
                      {"world_size", world_.size()},
                      {"state", state},
                      {"config", segment_config(segment_)},
                      {"changes", nlohmann::json::array()}};
  for (const RunChange& c : resume_changes_) j["changes"].push_back(c.text());
  std::string text;
  for (const nlohmann::json& r : read_segments(config_.run.dir)) {
    if (!(r.contains("segment") && r["segment"] == segment_)) text += r.dump() + "\n";
  }
  write_text_file(segments_path(config_.run.dir), text + j.dump() + "\n");
}

void Trainer::stop_run() {
  log::end_status();
  write_status("stopped");
  if (world_.is_root()) write_report(config_.run.dir);
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
  write_status("failed");
  if (world_.is_root()) write_report(config_.run.dir);
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
  const int S = mesh_->shard().size(), R = mesh_->replicas();
  const double per_rank = fsdp::training_bytes_per_rank(
      mc, policy_->layout(), S, config::dtype_bytes(m.dtype), config_.optim.state_tensors(),
      reference_ != nullptr, m.reshard_after_forward);
  const fsdp::StepCollectiveBytes traffic =
      step_traffic(config_, policy_->layout(), S, R, grad_accum_, reference_ != nullptr);

  // The same facts go to the log and to run.json, which the report shows.
  std::vector<std::pair<std::string, std::string>> facts;
  auto fact = [&](const std::string& key, const std::string& value) {
    log::info("train", key, ": ", value);
    facts.emplace_back(key, value);
  };
  fact("build", build_summary());
  fact("world", str_cat(world_.size(), " rank(s), ", comm_->backend(), " collectives"));
  for (size_t r = 0; r < ranks.size(); ++r) fact(str_cat("  rank ", r), ranks[r]);
  fact("sharding", str_cat(mesh_->describe(), " (dist.shard_group: ", config_.dist.shard_group, ")"));
  fact("traffic", traffic_text(traffic, S, R, mesh_->shard_spans_hosts(), mesh_->replica_spans_hosts()));
  fact("model", str_cat(model::name(mc.arch), ", ",
                        scaled_text(static_cast<double>(mc.num_parameters()), 1000, {"", "K", "M", "B", "T"}),
                        " parameters, ", config::name(m.dtype), " compute, ",
                        m.reshard_after_forward ? "resharded" : "kept", " units"));
  fact("memory", str_cat("~", human_bytes(per_rank), " per rank for weights, gradients, optimizer state",
                         reference_ ? ", reference" : "", " and gathered units (activations extra)"));
  fact("data", str_cat(train_data_->size(), " examples (", train_data_->count(true), " desirable, ",
                       train_data_->count(false), " undesirable)", train_data_->paired() ? ", paired" : "",
                       eval_data_ ? str_cat("; eval ", eval_data_->size(), " examples") : ""));
  const char* unit = train_data_->paired() ? " pairs" : " examples";
  fact("batch", str_cat("global ", loader_->global_batch(), unit, " = ", config_.data.micro_batch, " x ",
                        grad_accum_, " x ", world_.size(), " (micro_batch x grad_accum x ranks)",
                        train_data_->paired() ? str_cat(", ", 2 * loader_->global_batch(), " sequences") : "",
                        "; ", total_steps_, " steps", step_ > 0 ? str_cat(", resuming at step ", step_) : "",
                        "; layout ", choice_name(data::kBatchLayouts, config_.data.layout),
                        config_.data.group_by_length ? ", grouped by length" : ""));
  fact("loss",
       str_cat(loss::name(loss_.name), ": ", loss::describe(loss_),
               loss::uses_kl(loss_.name)
                   ? str_cat(", KL pairs ", choice_name(data::kPairings, config_.data.pairing), "/",
                             choice_name(data::kPairScopes, config_.data.pair_scope))
                   : "",
               !loss::uses_reference(loss_.name) ? ", no reference model"
               : precomputed_                    ? str_cat(", precomputed reference scores of ",
                                                           train_data_->attributes().reference_identity, " (no reference model)")
                                                 : ""));
  if (const char* job = std::getenv("SLURM_JOB_ID")) {
    const char* restarts = std::getenv("SLURM_RESTART_COUNT");
    fact("slurm job", str_cat(job, restarts ? str_cat(" (restart ", restarts, ")") : ""));
  }
  if (world_.is_root()) write_run_facts(config_.run.dir, facts);
}

void Trainer::write_status(const char* state) const {
  if (!world_.is_root()) return;
  write_segment(state);
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
  check_resume(manifest, dir);
  const ckpt::TrainingState state = ckpt::load(dir, *policy_, *optimizer_, world_);
  step_ = state.step;
  // Already saved if it came from this run's own checkpoint directory; a checkpoint from
  // elsewhere (another world size, another run) is saved here again at the end.
  const std::string parent = dir.substr(0, dir.find_last_of('/'));
  if (parent == checkpoints_dir()) last_saved_step_ = state.step;
  loader_->restore(state.sampler);
  log_->rewind(step_);  // metrics.jsonl continues from the checkpoint
}

RunFacts Trainer::identity() const {
  const model::ModelConfig& mc = policy_->config();
  const std::string arch = model::hf_config_json(mc, "float32");
  RunFacts f;
  f["model.architecture"] =
      str_cat(model::name(mc.arch), ", vocab ", mc.vocab_size, ", hidden ", mc.hidden_size, ", ",
              mc.num_hidden_layers, " layers, ", mc.num_attention_heads, " heads (config sha256 ",
              sha256_hex(arch.data(), arch.size()).substr(0, 16), ")");
  f["model.reference"] = reference_content_;
  const data::DatasetAttributes& a = train_data_->attributes();
  f["data.tokenizer"] = a.tokenizer_sha256.empty()
                            ? "none (token ids only)"
                            : str_cat(a.tokenizer_name, ", sha256 ", a.tokenizer_sha256);
  auto files = [&](const char* key, const data::Dataset* ds) {
    if (ds == nullptr) return;
    for (size_t i = 0; i < ds->identities().size(); ++i)
      f[str_cat(key, "[", i, "]")] = ds->identities()[i].describe();
  };
  files("data.train", train_data_.get());
  files("data.eval", eval_data_.get());
  return f;
}

void Trainer::check_resume(const ckpt::Manifest& manifest, const std::string& dir) {
  comm::SameOnEveryRank same;  // a refusal is every rank's: reported once
  RunFacts before = config::flatten_config(manifest.config_yaml, join_path(dir, "manifest.yaml"));
  RunFacts after = config::flatten_config(config::dump_config(config_), "this run's config");
  if (manifest.identity.empty()) {
    log::warn("ckpt", dir,
              " was written by an older kto that did not record its data and tokenizer: only the "
              "config and the reference are compared");
    before["model.reference"] = manifest.reference_identity;
    after["model.reference"] = reference_identity_;
  } else {
    before.insert(manifest.identity.begin(), manifest.identity.end());
    for (const auto& [key, value] : identity()) after[key] = value;
  }
  // The batch as the run sees it, not as the keys spell it: the world size may change when the
  // global batch (data.global_batch resolved) and the KL groups (data.global_microbatch: the
  // global microbatch with pair_scope global, each rank's with rank) stay the same.
  auto number = [&](const RunFacts& f, const char* key) {
    const auto it = f.find(key);
    return it == f.end() ? int64_t{0} : std::strtoll(it->second.c_str(), nullptr, 10);
  };
  const bool global_scope = before["data.pair_scope"] != "rank";
  const int64_t old_micro = number(before, "data.micro_batch");
  if (number(before, "data.global_batch") == 0)
    before["data.global_batch"] =
        std::to_string(old_micro * number(before, "data.grad_accum") * manifest.world_size);
  before["data.global_microbatch"] = std::to_string(old_micro * (global_scope ? manifest.world_size : 1));
  after["data.global_batch"] = std::to_string(loader_->global_batch());
  after["data.global_microbatch"] =
      std::to_string(config_.data.micro_batch * (after["data.pair_scope"] != "rank" ? world_.size() : 1));
  // With length grouping the per-rank microbatch size shapes the order itself (runs of it are
  // sorted and shuffled), so it may not change then.
  auto grouped = [](const RunFacts& f) {
    const auto it = f.find("data.group_by_length");
    return it != f.end() && it->second == "true";
  };
  if (grouped(before)) before["data.length_group_run"] = std::to_string(old_micro);
  if (grouped(after)) after["data.length_group_run"] = std::to_string(config_.data.micro_batch);
  for (const std::string& pattern : config_.ckpt.allow_change) {
    bool known = false;
    for (const auto* facts : {&before, &after}) {
      for (const auto& kv : *facts) known = known || key_matches(kv.first, pattern);
    }
    if (!known) {
      throw key_error(
          "", "ckpt.allow_change",
          str_cat("'", pattern, "' is not a config key or section, nor one of model.architecture, ",
                  "model.reference, data.tokenizer, data.train, data.eval"));
    }
  }
  resume_changes_ = check_resume_changes(run_changes(before, after), config_.ckpt.allow_change, dir);
  for (const RunChange& c : resume_changes_) log::info("ckpt", "resuming with a change: ", c.text());
}

void Trainer::save_checkpoint() {
  ckpt::SaveRequest request;
  request.checkpoints_dir = checkpoints_dir();
  request.state = {step_, loader_->state()};
  request.config_yaml = config::dump_config(config_);
  request.reference_identity = reference_identity_;
  request.model_source = config_.model.path;
  request.identity = identity();
  request.keep = config_.ckpt.keep;
  ckpt::save(request, *policy_, *optimizer_, world_);
  last_saved_step_ = step_;
  write_status("running");  // status.json and segments.jsonl up to this step
}

void Trainer::export_final() {
  const std::vector<at::Tensor> units = policy_->gather_full_units();  // collective
  if (!world_.is_root()) return;
  const std::string dir = join_path(config_.run.dir, "final");
  const at::ScalarType dtype = export_dtype();
  io::save_hf_model(dir, policy_->config(), policy_->layout(), units, dtype, policy_config_json_);
  const int copied = io::copy_tokenizer_files(export_tokenizer_, dir);
  log::info("train", "wrote the trained policy to ", dir, " (", io::hf_dtype_name(dtype), ", ", copied,
            " tokenizer file(s))");
}

at::ScalarType Trainer::export_dtype() const {
  const std::string& d = config_.train.export_dtype;
  if (d == "fp32") return at::kFloat;
  if (d == "bf16") return at::kBFloat16;
  // auto: the dtype the source model was stored in; a random init is fp32 (its masters).
  if (policy_config_json_.empty()) return at::kFloat;
  const nlohmann::json j = parse_json(policy_config_json_, join_path(config_.model.path, "config.json"));
  const std::string source = j.is_object() && j.contains("torch_dtype") && j["torch_dtype"].is_string()
                                 ? j["torch_dtype"].get<std::string>()
                                 : "float32";
  if (source == "bfloat16") return at::kBFloat16;
  if (source == "float16") return at::kHalf;
  return at::kFloat;
}

}  // namespace kto::train
