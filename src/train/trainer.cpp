#include "kto/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "kto/ckpt/checkpoint.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/model/hf_config.h"
#include "kto/train/report.h"
#include "kto/train/schedule.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/log.h"
#include "kto/util/process.h"
#include "kto/util/sha256.h"
#include "kto/util/signals.h"
#include "kto/util/version.h"

namespace kto::train {

using detail::str_cat;
using Clock = std::chrono::steady_clock;

namespace {

// `value` in the largest unit that keeps it under `base`: 6531390 parameters -> "6.53M",
// 88931000 bytes -> "84.8MiB". Three significant digits.
std::string scaled_text(double value, double base, const std::vector<const char*>& units) {
  size_t u = 0;
  while (value >= base && u + 1 < units.size()) {
    value /= base;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof(text),
                value < 10    ? "%.2f%s"
                : value < 100 ? "%.1f%s"
                              : "%.0f%s",
                value, units[u]);
  return text;
}

at::ScalarType compute_dtype(const std::string& name) {
  if (name == "bf16") return at::kBFloat16;
  if (name == "fp64") return at::kDouble;
  return at::kFloat;
}

// The loss's view of the world: sums over ranks through the communicator (on the device).
class CommReducer : public loss::Reducer {
 public:
  explicit CommReducer(comm::Communicator& comm) : comm_(comm) {}
  void sum_(at::Tensor& values) override {
    at::Tensor contiguous = values.contiguous();
    comm_.all_reduce(contiguous, comm::ReduceOp::sum)->wait();
    if (!contiguous.is_same(values)) values.copy_(contiguous);
  }
  int64_t world_size() const override { return comm_.size(); }

 private:
  comm::Communicator& comm_;
};

double parse_weight(const std::string& text, double automatic) {
  return text == "auto" ? automatic : std::stod(text);
}

// Per-rank matmul throughput in `dtype` (measured, for MFU), GFLOP/s: the best of several
// timed products, so thread start-up and a busy neighbour do not count as the peak.
double measure_peak_gflops(at::ScalarType dtype, at::Device device) {
  const int64_t n = dtype == at::kFloat || dtype == at::kDouble ? 1024 : 512;
  const at::Tensor a = at::randn({n, n}, at::TensorOptions().dtype(at::kFloat).device(device)).to(dtype);
  at::Tensor c = at::matmul(a, a);  // warm-up: threads and kernels
  double best = 0;
  for (int rep = 0; rep < 8; ++rep) {
    const auto t0 = Clock::now();
    c = at::matmul(a, a);
    c.sum().item<double>();  // completes queued device work
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(n * n * n) / s / 1e9);
  }
  return best;
}

// The content identity of a Hugging Face directory: config.json plus the weight index (or
// the single file's safetensors header), which names every tensor, shape and byte range.
std::string directory_identity(const std::string& dir) {
  std::string text = read_text_file(join_path(dir, "config.json"));
  const std::string index = join_path(dir, "model.safetensors.index.json");
  if (path_exists(index)) {
    text += read_text_file(index);
  } else {
    const std::string file = join_path(dir, "model.safetensors");
    const std::string bytes = read_text_file(file);
    uint64_t n = 0;
    if (bytes.size() >= 8) std::memcpy(&n, bytes.data(), 8);
    text += bytes.substr(0, static_cast<size_t>(std::min<uint64_t>(bytes.size(), 8 + n)));
  }
  return "sha256 " + sha256_hex(text.data(), text.size());
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// The local rank's GPU: with one GPU visible per task (srun --gpus-per-task=1, or a launcher
// that narrows CUDA_VISIBLE_DEVICES) that one; with all of a node's GPUs visible, the local rank-th.
at::Device pick_device(const comm::ProcessGroup& world) {
  if (!at::hasCUDA()) return at::Device(at::kCPU);
  const int gpus = at::detail::getCUDAHooks().getNumGPUs();
  if (world.local_size() > gpus && gpus > 1) {
    log::warn("train", world.local_size(), " ranks on this node share ", gpus,
              " visible GPUs; launch one rank per GPU (launch/mpirun.sh does)");
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(world.local_rank() % gpus));
}

}  // namespace

Trainer::Trainer(config::Config config, const comm::ProcessGroup& world)
    : config_(std::move(config)), world_(world), device_(pick_device(world)) {
  comm_ = std::shared_ptr<comm::Communicator>(comm::make_communicator(world_, device_));
  reducer_ = std::make_unique<CommReducer>(*comm_);
  setup_data();
  setup_models();
  resume();  // before the metrics log opens: a resumed run rewinds it to its checkpoint
  log_ = std::make_unique<MetricsLog>(config_.run.dir, world_.is_root());
}

Trainer::~Trainer() = default;

void Trainer::setup_data() {
  const config::DataSection& d = config_.data;
  const config::LossSection& l = config_.loss;
  if (d.train.empty()) throw ConfigError("key 'data.train': no training files given");
  for (const auto& [key, files] :
       {std::pair<const char*, const std::vector<std::string>*>{"data.train", &d.train},
        {"data.eval", &d.eval}}) {
    for (const std::string& f : *files) {
      if (!path_exists(f)) throw ConfigError(str_cat("key '", key, "': no such file '", f, "'"));
    }
  }
  const int64_t W = world_.size();
  grad_accum_ = d.grad_accum;
  if (d.global_batch > 0) {
    if (d.global_batch % (d.micro_batch * W) != 0) {
      throw ConfigError(str_cat("key 'data.global_batch': ", d.global_batch,
                                " is not divisible by micro_batch (", d.micro_batch, ") x world size (", W,
                                ")"));
    }
    grad_accum_ = d.global_batch / (d.micro_batch * W);
  }
  if (loss::uses_kl(l.name) && d.micro_batch < 2) {
    throw ConfigError(str_cat("key 'data.micro_batch': ", d.micro_batch,
                              " leaves no mismatched pair for KTO's KL estimate; use 2 or more"));
  }
  loss_.name = l.name;
  loss_.beta = l.beta;
  loss_.estimator = loss::parse_estimator(l.estimator);
  loss_.cdpo_epsilon = l.cdpo_epsilon;
  loss_.ipo_tau = l.ipo_tau;
  loss_.simpo_gamma_beta_ratio = l.simpo_gamma_beta_ratio;
  loss_.slic_margin = l.slic_margin;
  loss_.slic_lambda = l.slic_lambda;

  // The vocabulary check needs the model's size: read it from the model config first.
  const int64_t vocab = config_.model.path.empty() ? config_.model.architecture.vocab_size
                                                   : model::read_hf_config(config_.model.path).vocab_size;
  train_data_ = data::Dataset::open(d.train, vocab);
  if (!d.eval.empty()) eval_data_ = data::Dataset::open(d.eval, vocab);
  if (loss::is_paired(l.name) != train_data_->paired()) {
    throw ConfigError(
        loss::is_paired(l.name)
            ? str_cat("key 'loss.name': ", l.name, " needs paired data (kto-data prepare --keep-pairs)")
            : str_cat("key 'loss.name': ", l.name, " is an unpaired loss but data.train is paired"));
  }
  // CSFT learns from the control tokens at the end of each prompt; other losses should not see them.
  const std::string& control = train_data_->attributes().control_tokens;
  if (eval_data_ && eval_data_->attributes().control_tokens != control) {
    throw ConfigError(str_cat("key 'data.eval': control tokens '", eval_data_->attributes().control_tokens,
                              "' but data.train has '", control,
                              "' (prepare both with the same --control-tokens)"));
  }
  if (l.name == "csft" && control.empty()) {
    log::warn("train",
              "loss.name csft, but the training data has no control tokens (kto-data prepare "
              "--control-tokens GOOD,BAD): this trains SFT on every completion, undesirable ones too");
  } else if (l.name != "csft" && !control.empty()) {
    log::warn("train", "the training data's prompts end with CSFT control tokens (", control,
              "), which only loss.name csft expects");
  }
  const auto [auto_d, auto_u] =
      data::recommended_class_weights(train_data_->count(true), train_data_->count(false));
  loss_.desirable_weight = parse_weight(l.desirable_weight, auto_d);
  loss_.undesirable_weight = parse_weight(l.undesirable_weight, auto_u);
  loss::validate(loss_, "loss.");
  if (loss_.name.rfind("kto", 0) == 0 && l.desirable_weight != "auto" && l.undesirable_weight != "auto") {
    const double ratio = loss_.desirable_weight * static_cast<double>(train_data_->count(true)) /
                         (loss_.undesirable_weight * static_cast<double>(train_data_->count(false)));
    if (ratio < 1.0 - 1e-9 || ratio > 4.0 / 3.0 + 1e-9) {
      log::warn("train", "class weights give lambda_D*n_D/(lambda_U*n_U) = ", ratio,
                ", outside the paper's [1, 4/3];", " recommended: loss.desirable_weight=", auto_d,
                " loss.undesirable_weight=", auto_u, " (or auto)");
    }
  }

  data::LoaderOptions lo;
  lo.seed = static_cast<uint64_t>(d.seed);
  lo.micro_batch = d.micro_batch;
  lo.grad_accum = grad_accum_;
  lo.pair_scope = data::parse_pair_scope(d.pair_scope);
  lo.batch.pairing = data::parse_pairing(d.pairing);
  lo.batch.max_length = train_data_->attributes().max_length;
  lo.batch.pad_to_multiple_of = d.pad_to_multiple_of;
  lo.batch.build_kl = loss::uses_kl(loss_.name);
  loader_ =
      std::make_unique<data::DataLoader>(train_data_, lo, static_cast<int>(world_.size()), world_.rank());
  const int64_t items = train_data_->paired() ? train_data_->size() / 2 : train_data_->size();
  total_steps_ = config_.train.steps > 0
                     ? config_.train.steps
                     : static_cast<int64_t>(std::ceil(config_.train.epochs * static_cast<double>(items) /
                                                      static_cast<double>(loader_->global_batch())));
  total_steps_ = std::max<int64_t>(1, total_steps_);
}

void Trainer::setup_models() {
  const config::ModelSection& m = config_.model;
  model::ModelConfig mc = m.architecture;
  if (!m.path.empty()) {
    mc = model::read_hf_config(m.path);
    policy_config_json_ = read_text_file(join_path(m.path, "config.json"));
  }
  fsdp::FsdpOptions o;
  o.compute_dtype = compute_dtype(m.dtype);
  o.device = device_;
  o.reshard_after_forward = m.reshard_after_forward;
  o.prefetch = m.prefetch;
  policy_ = std::make_unique<fsdp::ShardedModel>(mc, world_, comm_, o);
  if (m.path.empty()) {
    policy_->init_random(static_cast<uint64_t>(m.init_seed), m.init_std);
  } else {
    policy_->load(io::SafetensorsSet::open_dir(m.path));
  }
  reference_identity_ = "none";
  if (loss::uses_reference(loss_.name) && !train_data_->has_reference_logps()) {
    fsdp::FsdpOptions r = o;
    r.trainable = false;
    const std::string ref_path = m.reference_path.empty() ? m.path : m.reference_path;
    reference_ = std::make_unique<fsdp::ShardedModel>(ref_path.empty() ? mc : model::read_hf_config(ref_path),
                                                      world_, comm_, r);
    if (ref_path.empty()) {
      reference_->init_random(static_cast<uint64_t>(m.init_seed), m.init_std);  // the initial policy
      reference_identity_ = str_cat("random init seed ", m.init_seed, " std ", m.init_std, " architecture ",
                                    sha256_hex(model::hf_config_json(mc, "float32").data(),
                                               model::hf_config_json(mc, "float32").size()));
    } else {
      reference_->load(io::SafetensorsSet::open_dir(ref_path));
      reference_identity_ = str_cat(ref_path, " ", directory_identity(ref_path));
    }
  }
  fsdp::OptimizerOptions oo;
  oo.name = config_.optim.name;
  oo.beta1 = config_.optim.beta1;
  oo.beta2 = config_.optim.beta2;
  oo.alpha = config_.optim.alpha;
  oo.eps = config_.optim.eps;
  oo.weight_decay = config_.optim.weight_decay;
  oo.max_grad_norm = config_.optim.max_grad_norm;
  optimizer_ =
      std::make_unique<fsdp::ShardedOptimizer>(policy_->shards(), policy_->decay_segments(), oo, &world_);

  // Model FLOPs per training token: 12N (policy fwd+bwd 6N, policy KL fwd 2N, reference fwds
  // 4N), N = parameters without the embedding lookup (the LM head counts).
  const double n = static_cast<double>(mc.num_parameters() - mc.vocab_size * mc.hidden_size +
                                       (mc.tie_word_embeddings ? mc.vocab_size * mc.hidden_size : 0));
  model_flops_per_token_ = 12.0 * n;
  const double per_rank = config_.train.peak_gflops > 0 ? config_.train.peak_gflops
                                                        : measure_peak_gflops(o.compute_dtype, device_);
  peak_flops_ = world_.all_reduce(per_rank * 1e9, comm::ReduceOp::sum);  // the job's peak
}

Trainer::Forward Trainer::forward(const data::Microbatch& mb, bool with_grad) {
  Forward f;
  const data::TokenBatch& t = mb.target;
  {
    at::NoGradGuard no_grad;
    // KL pass: log-probs of the mismatched pairs under policy and reference, no gradient.
    if (loss::uses_kl(loss_.name)) {
      f.kl_logp = policy_->sequence_logprobs(mb.kl.input_ids, mb.kl.attention_mask, mb.kl.selection);
      f.kl_ref = reference_
                     ? reference_->sequence_logprobs(mb.kl.input_ids, mb.kl.attention_mask, mb.kl.selection)
                     : mb.ref_kl_logp.to(device_);
    }
    if (loss::uses_reference(loss_.name)) {
      f.ref = reference_ ? reference_->sequence_logprobs(t.input_ids, t.attention_mask, t.selection)
                         : mb.ref_logp.to(device_);
    }
  }
  at::AutoGradMode grad(with_grad);
  f.logp = policy_->sequence_logprobs(t.input_ids, t.attention_mask, t.selection);
  return f;
}

loss::LossOutput Trainer::objective(const data::Microbatch& mb, const Forward& f,
                                    loss::Reducer& reducer) const {
  const at::Tensor tokens = mb.target.loss_mask.sum(1).to(f.logp.device());
  if (mb.paired) {
    const int64_t m = f.logp.size(0) / 2;
    loss::PairedInputs in;
    in.policy_chosen = f.logp.narrow(0, 0, m);
    in.policy_rejected = f.logp.narrow(0, m, m);
    if (f.ref.defined()) {
      in.ref_chosen = f.ref.narrow(0, 0, m);
      in.ref_rejected = f.ref.narrow(0, m, m);
    }
    in.len_chosen = tokens.narrow(0, 0, m);
    in.len_rejected = tokens.narrow(0, m, m);
    return loss::paired_loss(in, loss_);
  }
  loss::UnpairedInputs in{f.logp, f.ref, f.kl_logp, f.kl_ref, mb.desirable, tokens};
  return loss::unpaired_loss(in, loss_, reducer);
}

std::map<std::string, double> Trainer::train_step() {
  const auto t0 = Clock::now();
  StepSums sums(device_);
  for (const data::Microbatch& mb : loader_->next_step()) {
    const Forward f = forward(mb, /*with_grad=*/true);
    const loss::LossOutput out = objective(mb, f, *reducer_);
    (out.loss / static_cast<double>(grad_accum_)).backward();
    sums.add(mb, out, f.logp);
  }
  // Clip the global gradient norm and update with the scheduled learning rate.
  const double lr = learning_rate(config_.optim.lr, config_.schedule.warmup_steps, config_.schedule.decay,
                                  config_.schedule.min_lr_ratio, step_, total_steps_);
  const fsdp::StepResult result = optimizer_->step(lr);
  optimizer_->zero_grad();
  ++step_;

  // ---- metrics (after the algorithm) ----
  std::map<std::string, double> m = sums.reduce(*comm_);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  m["step"] = static_cast<double>(step_);
  m["lr"] = lr;
  m["grad_norm"] = result.grad_norm;
  m["step_seconds"] = seconds;
  m["tokens_per_s"] = m["tokens"] / seconds;
  m["mfu"] = model_flops_per_token_ * m["tokens_per_s"] / peak_flops_;
  m["peak_rss_mib"] = world_.all_reduce(peak_rss_mib(), comm::ReduceOp::max);
  // The loss and the norm are already global: every rank takes the same branch.
  const bool finite = result.finite && std::isfinite(m["loss"]);
  m["skipped"] = finite ? 0.0 : 1.0;
  nonfinite_in_a_row_ = finite ? 0 : nonfinite_in_a_row_ + 1;
  if (!finite)
    log::warn("train", "step ", step_, ": non-finite loss or gradient norm; the update was skipped");
  if (nonfinite_in_a_row_ >= config_.train.max_nonfinite_steps) {
    throw Error(str_cat("stopping: ", nonfinite_in_a_row_,
                        " consecutive steps with a non-finite loss or gradient norm"
                        " (train.max_nonfinite_steps); lower optim.lr or check the data"));
  }
  return m;
}

void Trainer::print_banner() const {
  const model::ModelConfig& mc = policy_->config();
  // Per-rank facts, gathered and printed in rank order.
  const auto ranks =
      world_.all_gather(str_cat(process_identity().host, ", ", device_.str(), ", ", at::get_num_threads(),
                                " thread(s), local rank ", world_.local_rank()));
  const double n = static_cast<double>(mc.num_parameters()), W = static_cast<double>(world_.size());
  const double compute_bytes = config_.model.dtype == "bf16" ? 2 : config_.model.dtype == "fp64" ? 8 : 4;
  const double optimizer_bytes = config_.optim.name == "adamw" ? 8 : 4;
  int64_t largest = 0;
  for (const auto& u : policy_->layout().units) largest = std::max(largest, u.numel);
  const double gathered =
      static_cast<double>(largest) * compute_bytes * (config_.model.reshard_after_forward ? 2 : 1);
  const double per_rank =
      n * (4 + 4 + optimizer_bytes) / W + (reference_ ? n * compute_bytes / W : 0) + gathered;

  // The same facts go to the log and to run.json, which the report shows.
  std::vector<std::pair<std::string, std::string>> facts;
  auto fact = [&](const std::string& key, const std::string& value) {
    log::info("train", key, ": ", value);
    facts.emplace_back(key, value);
  };
  fact("build", build_summary());
  fact("world", str_cat(world_.size(), " rank(s), ", comm_->backend(), " collectives"));
  for (size_t r = 0; r < ranks.size(); ++r) fact(str_cat("  rank ", r), ranks[r]);
  fact("model", str_cat(mc.arch, ", ", scaled_text(n, 1000, {"", "K", "M", "B", "T"}), " parameters, ",
                        config_.model.dtype, " compute, ",
                        config_.model.reshard_after_forward ? "resharded" : "kept", " units"));
  fact("memory", str_cat("~", scaled_text(per_rank, 1024, {" B", " KiB", " MiB", " GiB", " TiB"}),
                         " per rank for weights, gradients, optimizer state", reference_ ? ", reference" : "",
                         " and gathered units (activations extra)"));
  fact("data", str_cat(train_data_->size(), " examples (", train_data_->count(true), " desirable, ",
                       train_data_->count(false), " undesirable)", train_data_->paired() ? ", paired" : "",
                       eval_data_ ? str_cat("; eval ", eval_data_->size(), " examples") : ""));
  fact("batch", str_cat("global ", loader_->global_batch(), " = ", config_.data.micro_batch, " x ",
                        grad_accum_, " x ", world_.size(), "; ", total_steps_, " steps",
                        step_ > 0 ? str_cat(", resuming at step ", step_) : ""));
  fact("loss", str_cat(loss_.name, ": beta ", loss_.beta, ", lambda_D ", loss_.desirable_weight,
                       ", lambda_U ", loss_.undesirable_weight, ", z0 ", config_.loss.estimator, ", pairs ",
                       config_.data.pairing, "/", config_.data.pair_scope));
  if (const char* job = std::getenv("SLURM_JOB_ID")) {
    const char* restarts = std::getenv("SLURM_RESTART_COUNT");
    fact("slurm job", str_cat(job, restarts ? str_cat(" (restart ", restarts, ")") : ""));
  }
  if (world_.is_root()) write_run_facts(config_.run.dir, facts);
}

std::map<std::string, double> Trainer::fit() {
  if (world_.is_root()) {
    make_directories(config_.run.dir);
    write_text_file(join_path(config_.run.dir, "config.yaml"), config::dump_config(config_));
  }
  print_banner();
  write_status("running");
  std::map<std::string, double> last;
  const auto start = Clock::now();
  const int64_t first_step = step_;
  while (step_ < total_steps_) {
    last = train_step();
    log_->write(last, {{"split", "train"}});
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const double eta =
        elapsed / static_cast<double>(step_ - first_step) * static_cast<double>(total_steps_ - step_);
    if (step_ % config_.train.log_every == 0 || step_ == total_steps_) {
      log::status("train", progress_line(last, step_, total_steps_, eta));
    }
    // A signal on any rank stops every rank at this same step (one small all-reduce).
    const bool stop =
        world_.all_reduce(static_cast<int64_t>(signals::stop_requested()), comm::ReduceOp::max) > 0;
    if (stop || (config_.ckpt.every > 0 && step_ % config_.ckpt.every == 0)) save_checkpoint();
    if (stop) {
      log::end_status();
      if (world_.is_root()) write_report(config_.run.dir);
      write_status("stopped");
      log::info("train", "stopping at step ", step_, " on request (signal ", signals::stop_signal(),
                "); checkpoint saved, exit status ", signals::kExitStopped);
      stopped_ = true;
      return last;
    }
    const bool eval_now =
        eval_data_ &&
        ((config_.train.eval_every > 0 && step_ % config_.train.eval_every == 0) || step_ == total_steps_);
    if (eval_now) {
      auto e = evaluate();
      e["step"] = static_cast<double>(step_);
      log_->write(e, {{"split", "eval"}});
      log::info("eval", "step ", step_, ": loss ", e["eval/loss"], ", accuracy ", e["eval/accuracy"],
                e.count("eval/rewards/margin") ? str_cat(", margin ", e["eval/rewards/margin"]) : "");
    }
  }
  log::end_status();
  if (last_saved_step_ != step_) save_checkpoint();
  if (config_.train.export_final) export_final();
  write_status("done");
  if (world_.is_root()) {
    const std::string report = write_report(config_.run.dir);
    log::info("train", "report: ", report);
  }
  log::info("train", "done: ", step_, " steps; metrics in ", log_->path());
  return last;
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
  // metrics.jsonl continues from the checkpoint: records of later (lost) steps are dropped.
  if (world_.is_root()) {
    const std::string path = join_path(config_.run.dir, "metrics.jsonl");
    if (path_exists(path)) {
      std::ifstream in(path);
      std::string line, kept;
      while (std::getline(in, line)) {
        const size_t at = line.find("\"step\":");
        if (at == std::string::npos || std::atof(line.c_str() + at + 7) <= static_cast<double>(step_))
          kept += line + "\n";
      }
      write_text_file(path, kept);
    }
  }
}

void Trainer::save_checkpoint() {
  ckpt::save(checkpoints_dir(), *policy_, *optimizer_, {step_, loader_->state()},
             config::dump_config(config_), reference_identity_, config_.model.path, config_.ckpt.keep,
             world_);
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
