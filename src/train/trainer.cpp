// The training loop: setup, fit() and train_step(). Start-up facts (banner), checkpoints and
// resume live in run.cpp, evaluation in evaluate.cpp.
#include "kto/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "kto/comm/process_group.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/model/cpu_allocator.h"
#include "kto/model/hf_config.h"
#include "kto/train/run_plan.h"
#include "kto/train/schedule.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/log.h"
#include "kto/util/sha256.h"
#include "kto/util/signals.h"

namespace kto::train {

using detail::str_cat;
using Clock = std::chrono::steady_clock;

namespace {

at::ScalarType scalar_type(config::Dtype d) {
  switch (d) {
    case config::Dtype::bf16: return at::kBFloat16;
    case config::Dtype::fp64: return at::kDouble;
    case config::Dtype::fp32: return at::kFloat;
  }
  return at::kFloat;
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

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

}  // namespace

// The local rank's GPU: with one GPU visible per task (srun --gpus-per-task=1, or a launcher
// that narrows CUDA_VISIBLE_DEVICES) that one; with all of a node's GPUs visible, the local rank-th.
double Trainer::measure_peak_gflops_now() const {
  return measure_peak_gflops(scalar_type(config_.model.dtype), device_);
}

at::Device pick_device(const comm::ProcessGroup& world) {
  if (!at::hasCUDA()) return at::Device(at::kCPU);
  const int gpus = at::detail::getCUDAHooks().getNumGPUs();
  if (world.local_size() > gpus && gpus > 1) {
    log::warn("train", world.local_size(), " ranks on this node share ", gpus,
              " visible GPUs; launch one rank per GPU (launch/mpirun.sh does)");
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(world.local_rank() % gpus));
}

fsdp::FsdpOptions fsdp_options(const config::ModelSection& m, at::Device device) {
  fsdp::FsdpOptions o;
  o.compute_dtype = scalar_type(m.dtype);
  o.device = device;
  o.reshard_after_forward = m.reshard_after_forward;
  o.prefetch = m.prefetch;
  return o;
}

std::unique_ptr<fsdp::ShardedModel> load_reference(const config::Config& c, const model::ModelConfig& policy,
                                                   std::shared_ptr<const fsdp::Mesh> mesh,
                                                   at::Device device) {
  const config::ModelSection& m = c.model;
  fsdp::FsdpOptions r = fsdp_options(m, device);
  r.trainable = false;
  const std::string& ref_path = m.reference_dir();
  auto reference = std::make_unique<fsdp::ShardedModel>(
      ref_path.empty() ? policy : model::read_hf_config(ref_path), std::move(mesh), r);
  if (ref_path.empty()) {
    reference->init_random(static_cast<uint64_t>(m.init_seed), m.init_std);  // the initial policy
  } else {
    reference->load(io::SafetensorsSet::open_dir(ref_path));
  }
  return reference;
}

Trainer::Trainer(config::Config config, const comm::ProcessGroup& world)
    : config_(std::move(config)), world_(world), device_(pick_device(world)) {
  if (device_.is_cpu()) model::install_caching_cpu_allocator();  // steps reuse their buffers
  comm_ = std::shared_ptr<comm::Communicator>(comm::make_communicator(world_, device_));
  const config::Config& c = config_;
  c.validate("the config");  // already checked when parsed; a Config built in code is checked here
  const fsdp::ShardGroupSpec grouping = fsdp::ShardGroupSpec::parse(c.dist.shard_group);
  {
    comm::SameOnEveryRank same;  // the grouping is decided collectively: a refusal is every rank's
    fsdp::Mesh::check(world_, grouping);
  }
  // Making its communicators can fail on one rank alone (NCCL, memory): that aborts the job.
  mesh_ = fsdp::Mesh::build(world_, grouping, device_, comm_);
  if (c.data.train.empty()) throw key_error("", "data.train", "no training files given");
  check_files_exist(c.data.train, "data.train");
  check_files_exist(c.data.eval, "data.eval");
  // The data checks need the model's sizes: read its config first.
  model::ModelConfig mc = c.model.architecture;
  if (!c.model.path.empty()) {
    mc = model::read_hf_config(c.model.path);
    policy_config_json_ = read_text_file(join_path(c.model.path, "config.json"));
  }
  train_data_ = data::Dataset::open(c.data.train, mc.vocab_size);
  if (!c.data.eval.empty()) eval_data_ = data::Dataset::open(c.data.eval, mc.vocab_size);
  const RunPlan plan = [&] {
    comm::SameOnEveryRank same;  // the config and the data's headers: a refusal is reported once
    return check_run(c, mc, *train_data_, eval_data_.get(), world_.size());
  }();
  check_tokenizers(c, *train_data_, eval_data_.get());
  export_tokenizer_ = export_tokenizer_files(c, *train_data_);
  loss_ = plan.loss;
  precomputed_ = plan.precomputed;
  grad_accum_ = plan.grad_accum;
  total_steps_ = plan.total_steps;
  loader_ = std::make_unique<data::DataLoader>(
      train_data_, c.data, grad_accum_,
      data::batch_options(c.data, *train_data_, loss::uses_kl(loss_.name), precomputed_), world_.size(),
      world_.rank());
  const bool with_reference = loss::uses_reference(loss_.name) && !precomputed_;
  if (device_.is_cpu()) {  // GPU memory is the device's: LibTorch reports a CUDA OOM with its size
    check_run_memory(c, mc, *train_data_, mesh_->shard().size(), world_.local_size(), with_reference);
  }
  setup_models(mc);
  log_ = std::make_unique<MetricsLog>(c.run.dir, world_.is_root());
  resume();  // a resumed run rewinds the metrics log to its checkpoint
}

Trainer::~Trainer() = default;

void Trainer::setup_models(const model::ModelConfig& mc) {
  const config::ModelSection& m = config_.model;
  policy_ = std::make_unique<fsdp::ShardedModel>(mc, mesh_, fsdp_options(m, device_));
  if (m.path.empty()) {
    policy_->init_random(static_cast<uint64_t>(m.init_seed), m.init_std);
  } else {
    policy_->load(io::SafetensorsSet::open_dir(m.path));
  }
  reference_identity_ = reference_content_ = "none";
  if (precomputed_) {  // the scores' reference, as the data records it
    reference_content_ = "precomputed scores of " + train_data_->attributes().reference_identity;
    reference_identity_ = reference_content_;
  } else if (loss::uses_reference(loss_.name)) {
    reference_ = load_reference(config_, mc, mesh_, device_);
    const std::string& ref_path = m.reference_dir();
    reference_content_ = reference_content_identity(config_, mc);
    reference_identity_ = ref_path.empty() ? reference_content_ : str_cat(ref_path, " ", reference_content_);
  }
  optimizer_ = std::make_unique<fsdp::ShardedOptimizer>(policy_->shards(), policy_->decay_segments(),
                                                        config_.optim, &policy_->shard_comm());

  // Model FLOPs per training token: policy forward + backward 6N, the policy's KL forward 2N, a
  // live reference's forwards 2N per pass (KTO: 12N; on precomputed scores 8N; DPO 8N; SFT 6N),
  // N = parameters without the embedding lookup (the LM head counts).
  const double n = static_cast<double>(mc.num_parameters() - mc.vocab_size * mc.hidden_size +
                                       (mc.tie_word_embeddings ? mc.vocab_size * mc.hidden_size : 0));
  const bool kl = loss::uses_kl(loss_.name);
  model_flops_per_token_ = (6.0 + (kl ? 2.0 : 0.0) + (reference_ ? (kl ? 4.0 : 2.0) : 0.0)) * n;
  const double per_rank = config_.train.peak_gflops > 0 ? config_.train.peak_gflops
                                                        : measure_peak_gflops(scalar_type(m.dtype), device_);
  peak_flops_ = world_.all_reduce(per_rank * 1e9, comm::ReduceOp::sum);  // the job's peak
}

fsdp::CommStats Trainer::comm_stats() const {
  fsdp::CommStats s = policy_->comm_stats();
  if (reference_) s += reference_->comm_stats();
  return s;
}

fsdp::ShardedModel::Batch model_batch(const data::TokenBatch& t) {
  return {t.input_ids, t.attention_mask, t.selection, t.packed};
}

Trainer::ReferenceLogProbs Trainer::reference_logprobs(const data::Microbatch& mb, bool with_kl) {
  at::NoGradGuard no_grad;
  ReferenceLogProbs r;
  if (!with_kl && !loss::uses_reference(loss_.name)) return r;  // the loss needs none
  if (!reference_) {  // precomputed: in the dtype a live reference's log-probs would have
    const at::ScalarType dt = config_.model.dtype == config::Dtype::fp64 ? at::kDouble : at::kFloat;
    r.target = mb.ref_logp.to(device_).to(dt);
    if (with_kl) r.kl = mb.ref_kl_logp.to(device_).to(dt);
    return r;
  }
  if (!with_kl) {
    r.target = reference_->sequence_logprobs(model_batch(mb.target));
    return r;
  }
  const std::vector<at::Tensor> lp =
      reference_->sequence_logprobs_each({model_batch(mb.target), model_batch(mb.kl)});
  r.target = lp[0];
  r.kl = lp[1];
  return r;
}

Trainer::LogProbs Trainer::policy_logprobs(const data::Microbatch& mb, const ReferenceLogProbs& ref,
                                           bool with_grad) {
  LogProbs lp;
  lp.reference = ref.target;
  at::AutoGradMode grad(with_grad);
  if (!ref.kl.defined()) {
    lp.policy = policy_->sequence_logprobs(model_batch(mb.target));
    return lp;
  }
  const std::vector<at::Tensor> both =
      policy_->sequence_logprobs_each({model_batch(mb.target), model_batch(mb.kl)});
  lp.policy = both[0];
  lp.kl = both[1] - ref.kl;
  return lp;
}

double Trainer::executed_flops(const data::Microbatch& mb, bool with_kl) const {
  auto blocks = [](const model::ModelConfig& c, const data::TokenBatch& b) {
    return c.forward_flops(b.positions, b.attention_pairs, 0);
  };
  auto head = [](const model::ModelConfig& c, const data::TokenBatch& b) {
    return c.forward_flops(0, 0, b.selection.rows.numel());
  };
  const model::ModelConfig& pc = policy_->config();
  // Policy target: forward and backward (2x; the head's backward recomputes its logits: 3x).
  double f = 3.0 * blocks(pc, mb.target) + 4.0 * head(pc, mb.target);
  if (config_.model.reshard_after_forward) f += blocks(pc, mb.target) + head(pc, mb.target);  // recompute
  if (with_kl) f += blocks(pc, mb.kl) + head(pc, mb.kl);
  if (reference_) {  // built only for losses that use it
    const model::ModelConfig& rc = reference_->config();
    f += blocks(rc, mb.target) + head(rc, mb.target);
    if (with_kl) f += blocks(rc, mb.kl) + head(rc, mb.kl);
  }
  return f;
}

loss::LossOutput Trainer::objective(const data::Microbatch& mb, const LogProbs& lp,
                                    const at::Tensor& z0) const {
  const at::Tensor tokens = mb.target.completion_tokens.to(lp.policy.device());
  if (!mb.paired) return loss::unpaired_loss({lp.policy, lp.reference, mb.desirable, tokens}, z0, loss_);
  const int64_t m = lp.policy.size(0) / 2;  // chosen rows first, then their rejected ones
  loss::PairedInputs in;
  in.policy_chosen = lp.policy.narrow(0, 0, m);
  in.policy_rejected = lp.policy.narrow(0, m, m);
  if (lp.reference.defined()) {
    in.ref_chosen = lp.reference.narrow(0, 0, m);
    in.ref_rejected = lp.reference.narrow(0, m, m);
  }
  in.len_chosen = tokens.narrow(0, 0, m);
  in.len_rejected = tokens.narrow(0, m, m);
  return loss::paired_loss(in, loss_);
}

at::Tensor Trainer::zero_z0() const {
  const bool fp64 = config_.model.dtype == config::Dtype::fp64;
  return at::zeros({}, at::TensorOptions().dtype(fp64 ? at::kDouble : at::kFloat).device(device_));
}

std::map<std::string, double> Trainer::train_step() {
  const auto t0 = Clock::now();
  const fsdp::StepCollectiveBytes moved_before = fsdp::counted_collective_bytes(comm_stats());
  StepSums sums(device_);
  for (const data::Microbatch& mb : loader_->next_step()) {
    at::Tensor z0 = zero_z0();
    const bool kl = loss::uses_kl(loss_.name);
    // The reference (no grad, or precomputed) on the target and KL batches at once.
    const ReferenceLogProbs ref = reference_logprobs(mb, kl);
    // The policy's target log-probs (grad) and KL pass (no grad).
    const LogProbs lp = policy_logprobs(mb, ref, /*with_grad=*/true);
    if (kl) {
      // z0 over the global microbatch: (sum, count) all-reduced.
      at::Tensor stats = loss::kl_statistics(lp.kl, loss_.estimator);
      comm_->all_reduce(stats, comm::ReduceOp::sum)->wait();
      z0 = loss::reference_point(stats, loss_.estimator).z0;
    }
    // Loss; backward reduce-scatters the gradients into this rank's slices.
    const loss::LossOutput out = objective(mb, lp, z0);
    (out.loss / static_cast<double>(grad_accum_)).backward();
    sums.add(mb, out, z0, lp.policy, executed_flops(mb, kl));
  }
  // Hybrid sharding: every shard group's gradient becomes the world's average (one all-reduce
  // across the replicas per step, whatever grad_accum is).
  policy_->reduce_gradients_across_replicas();
  // Decide before the update, every rank the same way: loss and gradient norm finite everywhere.
  const double grad_norm = optimizer_->grad_norm();  // over the shard group's slices: the whole model
  const bool finite = world_.all_true(std::isfinite(grad_norm) && sums.loss_is_finite());  // MIN
  // Clip to the global norm and update with the scheduled learning rate.
  const double lr = learning_rate(config_.schedule, config_.optim.lr, step_, total_steps_);
  if (finite) optimizer_->step(lr, grad_norm);
  optimizer_->zero_grad();
  ++step_;
  nonfinite_in_a_row_ = finite ? 0 : nonfinite_in_a_row_ + 1;

  // ---- metrics (after the algorithm) ----
  std::map<std::string, double> m = sums.reduce(*comm_);
  if (!loss::uses_kl(loss_.name)) m.erase("kl");  // only what the loss uses
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  m["step"] = static_cast<double>(step_);
  m["lr"] = lr;
  m["grad_norm"] = grad_norm;
  m["step_seconds"] = seconds;
  m["tokens_per_s"] = m["tokens"] / seconds;
  m["mfu"] = model_flops_per_token_ * m["tokens_per_s"] / peak_flops_;  // model FLOPs: 12N per token
  m["hfu"] = m["executed_flops"] / seconds / peak_flops_;               // what was computed
  m["peak_rss_mib"] = world_.all_reduce(peak_rss_mib(), comm::ReduceOp::max);
  // This rank's traffic by link (every rank's alike): bytes sent, as ring collectives send them.
  fsdp::StepCollectiveBytes moved = fsdp::counted_collective_bytes(comm_stats());
  moved.gathered -= moved_before.gathered;
  moved.reduced -= moved_before.reduced;
  moved.replica_reduced -= moved_before.replica_reduced;
  m["comm_shard_mib"] = moved.shard_link_bytes(mesh_->shard().size()) / (1 << 20);
  if (mesh_->replicas() > 1) m["comm_replica_mib"] = moved.replica_link_bytes(mesh_->replicas()) / (1 << 20);
  m["skipped"] = finite ? 0.0 : 1.0;
  if (!finite)
    log::warn("train", "step ", step_, ": non-finite loss or gradient norm; the update was skipped");
  return m;
}

std::map<std::string, double> Trainer::fit() {
  start_run();
  std::map<std::string, double> last;
  const auto start = Clock::now();
  const int64_t first_step = step_;
  if (step_ == 0 && config_.train.eval_at_start && eval_data_) {
    log_evaluation();  // the starting point
  } else if (step_ == 0 && samples_due()) {
    write_samples();  // the reference's own answers, before any update
  }
  while (step_ < total_steps_) {
    last = train_step();
    log_->write(last, {{"split", "train"}});
    if (step_ % config_.train.log_every == 0 || step_ == total_steps_) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      const double eta =
          elapsed / static_cast<double>(step_ - first_step) * static_cast<double>(total_steps_ - step_);
      log::status("train", progress_line(last, step_, total_steps_, eta));
    }
    if (nonfinite_in_a_row_ >= config_.train.max_nonfinite_steps) {  // the same count on every rank
      fail_run();
      return last;
    }
    // A signal on any rank stops every rank at this same step (one small all-reduce).
    const bool stop =
        world_.all_reduce(static_cast<int64_t>(signals::stop_requested()), comm::ReduceOp::max) > 0;
    if (stop || (config_.ckpt.every > 0 && step_ % config_.ckpt.every == 0)) save_checkpoint();
    if (stop) {
      stop_run();
      return last;
    }
    if (eval_due()) log_evaluation();
  }
  finish_run();
  return last;
}

bool Trainer::eval_due() const {
  const int64_t every = config_.train.eval_every;
  return eval_data_ && ((every > 0 && step_ % every == 0) || step_ == total_steps_);
}

void Trainer::log_evaluation() {
  auto e = evaluate();
  e["step"] = static_cast<double>(step_);
  log_->write(e, {{"split", "eval"}});
  log::info("eval", eval_line(e, step_));
  if (samples_due()) write_samples();
}

}  // namespace kto::train
