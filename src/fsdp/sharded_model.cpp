#include "kto/fsdp/sharded_model.h"

#include <ATen/ATen.h>

#include <chrono>

#include "kto/io/hf_checkpoint.h"
#include "kto/model/dense_model.h"
#include "kto/util/check.h"
#include "runners.h"

namespace kto::fsdp {

using detail::str_cat;
using model::Role;

ShardRange shard_range(int64_t numel, int world_size, int rank) {
  ShardRange r;
  r.numel = numel;
  r.padded_numel = (numel + world_size - 1) / world_size * world_size;
  r.shard_numel = r.padded_numel / world_size;
  r.begin = r.shard_numel * rank;
  return r;
}

namespace {

bool decays(Role role) {
  switch (role) {
    case Role::embed:
    case Role::q_w:
    case Role::k_w:
    case Role::v_w:
    case Role::qkv_w:
    case Role::o_w:
    case Role::gate_w:
    case Role::up_w:
    case Role::down_w:
    case Role::lm_head: return true;
    default: return false;  // norms and biases
  }
}

}  // namespace

std::vector<Segment> decay_segments(const model::UnitLayout& unit, int64_t begin, int64_t count) {
  std::vector<Segment> out;
  for (const model::ParamSpec& p : unit.params) {
    const int64_t lo = std::max(begin, p.offset), hi = std::min(begin + count, p.offset + p.numel);
    if (lo < hi && decays(p.role)) {
      if (!out.empty() && out.back().begin + out.back().length == lo - begin) {
        out.back().length += hi - lo;  // adjacent decaying parameters: one segment
      } else {
        out.push_back({lo - begin, hi - lo});
      }
    }
  }
  return out;
}

double training_bytes_per_rank(const model::ModelConfig& config, const model::ModelLayout& layout,
                               int world_size, int compute_bytes, int optimizer_state_tensors,
                               bool with_reference, bool reshard_after_forward) {
  const double n = static_cast<double>(config.num_parameters()), W = static_cast<double>(world_size);
  int64_t largest = 0;
  for (const model::UnitLayout& u : layout.units) largest = std::max(largest, u.numel);
  const double gathered = static_cast<double>(largest) * compute_bytes * (reshard_after_forward ? 2 : 1);
  return n * (4 + 4 + 4.0 * optimizer_state_tensors) / W + (with_reference ? n * compute_bytes / W : 0) +
         gathered;
}

StepCollectiveBytes step_collective_bytes(const model::ModelLayout& layout, int shard_size, int replicas,
                                          int compute_bytes, int master_bytes, int64_t microbatches,
                                          bool with_reference, bool reshard_after_forward) {
  StepCollectiveBytes b;
  double units = 0, walk = 0, slices = 0;  // elements: every unit once; a walk's gathers; this rank's slices
  for (size_t u = 0; u < layout.units.size(); ++u) {
    const ShardRange r = shard_range(layout.units[u].numel, shard_size, 0);
    units += static_cast<double>(r.padded_numel);
    slices += static_cast<double>(r.shard_numel);
    for (size_t w : layout.weight_units(u))
      walk += static_cast<double>(shard_range(layout.units[w].numel, shard_size, 0).padded_numel);
  }
  const double mb = static_cast<double>(microbatches);
  if (shard_size > 1) {
    const double policy = reshard_after_forward ? 2 * walk : units;  // kept units reuse one gather
    b.gathered = mb * (policy + (with_reference ? walk : 0)) * compute_bytes;
    b.reduced = mb * (reshard_after_forward ? walk : units) * compute_bytes;
  }
  if (replicas > 1) b.replica_reduced = slices * master_bytes;
  return b;
}

StepCollectiveBytes counted_collective_bytes(const CommStats& s) {
  StepCollectiveBytes b;
  b.gathered = static_cast<double>(s.all_gather_bytes);
  b.reduced = static_cast<double>(s.reduce_scatter_bytes);
  b.replica_reduced = static_cast<double>(s.replica_all_reduce_bytes);
  return b;
}

// ---------------------------------------------------------------------------------------------
// UnitGatherer

struct UnitGatherer::Pending {
  at::Tensor send, full;
  comm::WorkHandle work;  // none at world size 1
};

namespace {
// Gradient reduce-scatters in flight at once: each holds a unit's full gradient, so this bounds
// the extra memory while letting a unit's traffic overlap the next unit's backward.
constexpr size_t kGradsInFlight = 2;
}  // namespace

UnitGatherer::UnitGatherer(const ShardedModel& model, comm::Communicator& comm)
    : model_(model), comm_(comm) {}
UnitGatherer::~UnitGatherer() {
  // Never abandon a collective in flight.
  for (auto& [unit, p] : inflight_)
    if (p->work) p->work->wait();
  for (auto& [unit, p] : grads_) p->work->wait();
}

void UnitGatherer::prefetch(size_t unit) {
  if (inflight_.count(unit)) return;
  const ShardRange& r = model_.range(unit);
  auto p = std::make_unique<Pending>();
  const auto opts = at::TensorOptions().dtype(model_.options().compute_dtype).device(model_.options().device);
  p->send = model_.shards()[unit].detach().to(opts).contiguous();
  if (comm_.size() == 1) {
    p->full = p->send;  // the slice is the unit: nothing to move (a view of fp32 masters in fp32)
  } else {
    p->full = at::empty({r.padded_numel}, opts);
    p->work = comm_.all_gather(p->send, p->full);
    stats.all_gather_bytes += p->full.numel() * p->full.element_size();
  }
  ++stats.all_gathers;
  inflight_.emplace(unit, std::move(p));
}

at::Tensor UnitGatherer::get(size_t unit) {
  if (inflight_.count(unit)) ++stats.prefetch_hits;
  prefetch(unit);
  auto it = inflight_.find(unit);
  std::unique_ptr<Pending> p = std::move(it->second);
  inflight_.erase(it);
  if (p->work) {
    const auto t0 = std::chrono::steady_clock::now();
    p->work->wait();
    stats.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  progress();
  return p->full.narrow(0, 0, model_.range(unit).numel);
}

void UnitGatherer::progress() {
  for (auto& [unit, p] : inflight_)
    if (p->work) p->work->test();
  for (auto& [unit, p] : grads_) p->work->test();
}

const model::ModelLayout& UnitGatherer::layout() const { return model_.layout(); }
const at::Tensor& UnitGatherer::slice(size_t unit) const { return model_.shards()[unit]; }
bool UnitGatherer::prefetching() const { return model_.options().prefetch; }

void UnitGatherer::land(size_t unit, const at::Tensor& shard_grad) {
  const at::Tensor& s = model_.shards()[unit];
  at::Tensor g = shard_grad.to(s.scalar_type());
  at::Tensor& acc = s.mutable_grad();
  if (acc.defined()) {
    acc.add_(g);
  } else {
    acc = g.detach();
  }
}

void UnitGatherer::reduce_scatter_grad(size_t unit, const at::Tensor& full_grad) {
  const ShardRange& r = model_.range(unit);
  ++stats.reduce_scatters;
  if (comm_.size() == 1) {
    land(unit, full_grad.reshape({-1}));  // the average over one rank is the gradient itself
    return;
  }
  const auto opts = at::TensorOptions().dtype(model_.options().compute_dtype).device(model_.options().device);
  auto p = std::make_unique<Pending>();
  p->send = at::empty({r.padded_numel}, opts);
  p->send.narrow(0, 0, r.numel).copy_(full_grad.reshape({-1}));
  if (r.padded_numel > r.numel) p->send.narrow(0, r.numel, r.padded_numel - r.numel).zero_();
  p->full = at::empty({r.shard_numel}, opts);  // this rank's averaged slice
  p->work = comm_.reduce_scatter(p->send, p->full, comm::ReduceOp::avg);
  stats.reduce_scatter_bytes += p->send.numel() * p->send.element_size();
  grads_.emplace_back(unit, std::move(p));
  progress();
  while (grads_.size() > kGradsInFlight) {
    auto [u, oldest] = std::move(grads_.front());
    grads_.erase(grads_.begin());
    const auto t0 = std::chrono::steady_clock::now();
    oldest->work->wait();
    stats.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    land(u, oldest->full);
  }
}

void UnitGatherer::finish_gradients() {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& [u, p] : grads_) {
    p->work->wait();
    land(u, p->full);
  }
  grads_.clear();
  stats.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---------------------------------------------------------------------------------------------
// ShardedModel

ShardedModel::ShardedModel(model::ModelConfig config, std::shared_ptr<const Mesh> mesh, FsdpOptions options)
    : config_(std::move(config)),
      layout_(model::ModelLayout::build(config_)),
      mesh_(std::move(mesh)),
      options_(options) {
  const comm::ProcessGroup& group = mesh_->shard();
  KTO_CHECK(mesh_->shard_comm()->size() == group.size() && mesh_->shard_comm()->rank() == group.rank(),
            "communicator and group disagree");
  // Trainable slices are fp32 masters (fp64 for fp64 runs); frozen ones live in the compute dtype.
  const at::ScalarType master = options_.compute_dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::ScalarType slice_dtype = options_.trainable ? master : options_.compute_dtype;
  for (const model::UnitLayout& unit : layout_.units) {
    const ShardRange r = shard_range(unit.numel, group.size(), group.rank());
    ranges_.push_back(r);
    shards_.push_back(
        at::zeros({r.shard_numel}, at::TensorOptions().dtype(slice_dtype).device(options_.device)));
    decay_segments_.push_back(fsdp::decay_segments(unit, r.begin, r.shard_numel));
  }
  if (options_.trainable) {
    for (at::Tensor& s : shards_) s.requires_grad_(true);
  }
  gatherer_ = std::make_unique<UnitGatherer>(*this, *mesh_->shard_comm());
}

ShardedModel::~ShardedModel() = default;

void ShardedModel::load(const io::SafetensorsSet& weights) {
  io::check_hf_weights(weights, layout_);
  at::NoGradGuard no_grad;
  for (size_t u = 0; u < layout_.units.size(); ++u) {
    at::Tensor slice =
        at::empty({ranges_[u].shard_numel}, shards_[u].options().device(at::kCPU).requires_grad(false));
    io::read_unit_range(weights, layout_.units[u], ranges_[u].begin, slice);
    shards_[u].copy_(slice);
  }
}

void ShardedModel::init_random(uint64_t seed, double std) {
  model::DenseModel dense(config_, at::kFloat);
  dense.init_random(seed, std);
  at::NoGradGuard no_grad;
  for (size_t u = 0; u < layout_.units.size(); ++u) {
    const ShardRange& r = ranges_[u];
    at::Tensor padded = at::zeros({r.padded_numel}, at::kFloat);
    padded.narrow(0, 0, r.numel).copy_(dense.units()[u]);
    shards_[u].copy_(padded.narrow(0, r.begin, r.shard_numel));
  }
}

std::vector<at::Tensor> ShardedModel::gather_full_units() const {
  std::vector<at::Tensor> out;
  gather_full_units([&out](size_t, const at::Tensor& full) { out.push_back(full.cpu()); });
  return out;
}

void ShardedModel::gather_full_units(const std::function<void(size_t, const at::Tensor&)>& each) const {
  for (size_t u = 0; u < shards_.size(); ++u) {
    const ShardRange& r = ranges_[u];
    at::Tensor send = shards_[u].detach().to(at::kFloat).contiguous();  // fp32 view of every slice
    at::Tensor full = at::empty({r.padded_numel}, send.options());
    shard_comm().all_gather(send, full)->wait();
    each(u, full.narrow(0, 0, r.numel));
  }
}

void ShardedModel::reduce_gradients_across_replicas() {
  comm::Communicator* replicas = mesh_->replica_comm();
  if (replicas == nullptr) return;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<comm::WorkHandle> works;  // the gradients are the slices' own: alive until waited on
  for (at::Tensor& s : shards_) {
    // Every rank of a replica set holds the same slices and ran the same backward, so a .grad is
    // defined on all of them or on none.
    if (!s.grad().defined()) continue;
    at::Tensor& g = s.mutable_grad();
    if (!g.is_contiguous()) g = g.contiguous();
    works.push_back(replicas->all_reduce(g, comm::ReduceOp::avg));
    gatherer_->stats.replica_all_reduce_bytes += g.numel() * g.element_size();
    ++gatherer_->stats.replica_all_reduces;
  }
  for (comm::WorkHandle& w : works) w->wait();
  gatherer_->stats.wait_seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int64_t ShardedModel::shard_bytes() const {
  int64_t bytes = 0;
  for (const at::Tensor& s : shards_) bytes += s.numel() * s.element_size();
  return bytes;
}

const CommStats& ShardedModel::comm_stats() const { return gatherer_->stats; }
void ShardedModel::reset_comm_stats() { gatherer_->stats = CommStats{}; }

namespace {
// How a forward runs its units now: no graph, kept for backward, or recomputed in backward.
RunMode run_mode(const FsdpOptions& o) {
  if (!(o.trainable && at::GradMode::is_enabled())) return RunMode::no_grad;
  return o.reshard_after_forward ? RunMode::resharded : RunMode::kept;
}
}  // namespace

std::shared_ptr<model::ForwardContext> ShardedModel::context_for(const Batch& b) const {
  KTO_CHECK(b.ids_BT.dim() == 2, "input_ids must be [B, T], got ", b.ids_BT.sizes());
  KTO_CHECK(b.selection.rows.defined(), "sequence_logprobs needs a token selection (model::select_tokens)");
  auto context = std::make_shared<model::ForwardContext>();
  if (b.packed) {
    KTO_CHECK(b.ids_BT.size(0) == 1 && b.ids_BT.size(1) == b.packed->tokens, "a packed batch of ",
              b.packed->tokens, " tokens has input_ids ", b.ids_BT.sizes());
    context->attention =
        model::make_packed_attention_inputs(config_, *b.packed, options_.compute_dtype, options_.device);
  } else {
    context->attention = model::make_attention_inputs(config_, b.attention_mask_BT, b.ids_BT.size(1),
                                                      options_.compute_dtype, options_.device);
  }
  context->selection = b.selection.to(options_.device);
  context->logprob_chunk_rows = options_.logprob_chunk_rows;
  return context;
}

at::Tensor ShardedModel::sequence_logprobs(const Batch& b) {
  KTO_CHECK(!b.packed || !b.packed->has_prefixes(),
            "a continuation batch needs its provider in the same walk");
  auto context = context_for(b);
  const std::unique_ptr<model::UnitRunner> runner = make_runner(run_mode(options_), *gatherer_);
  return model::forward_units(config_, layout_, *runner, b.ids_BT.to(options_.device), context);
}

std::vector<at::Tensor> ShardedModel::sequence_logprobs_each(const std::vector<Batch>& batches) {
  KTO_CHECK(!batches.empty(), "sequence_logprobs_each: no batches");
  std::vector<at::Tensor> ids;
  std::vector<std::shared_ptr<const model::ForwardContext>> contexts;
  for (const Batch& b : batches) {
    contexts.push_back(context_for(b));
    ids.push_back(b.ids_BT.to(options_.device));
  }
  const std::unique_ptr<model::UnitRunner> runner = make_runner(run_mode(options_), *gatherer_);
  return model::forward_units_each(config_, layout_, *runner, ids, contexts);
}

}  // namespace kto::fsdp
