#include "kto/fsdp/sharded_model.h"

#include <ATen/ATen.h>

#include <chrono>

#include "kto/io/hf_checkpoint.h"
#include "kto/model/blocks.h"
#include "kto/model/dense_model.h"
#include "kto/util/check.h"
#include "unit_function.h"

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

// ---------------------------------------------------------------------------------------------
// UnitGatherer

struct UnitGatherer::Pending {
  at::Tensor send, full;
  comm::WorkHandle work;
};

UnitGatherer::UnitGatherer(const ShardedModel& model, comm::Communicator& comm)
    : model_(model), comm_(comm) {}
UnitGatherer::~UnitGatherer() {
  for (auto& [unit, p] : inflight_) p->work->wait();  // never abandon a collective in flight
}

void UnitGatherer::prefetch(size_t unit) {
  if (inflight_.count(unit)) return;
  const ShardRange& r = model_.range(unit);
  auto p = std::make_unique<Pending>();
  const auto opts = at::TensorOptions().dtype(model_.options().compute_dtype).device(model_.options().device);
  p->send = model_.shards()[unit].detach().to(opts).contiguous();
  p->full = at::empty({r.padded_numel}, opts);
  p->work = comm_.all_gather(p->send, p->full);
  stats.all_gather_bytes += p->full.numel() * p->full.element_size();
  ++stats.all_gathers;
  inflight_.emplace(unit, std::move(p));
}

at::Tensor UnitGatherer::get(size_t unit) {
  if (inflight_.count(unit)) ++stats.prefetch_hits;
  prefetch(unit);
  auto it = inflight_.find(unit);
  std::unique_ptr<Pending> p = std::move(it->second);
  inflight_.erase(it);
  const auto t0 = std::chrono::steady_clock::now();
  p->work->wait();
  stats.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return p->full.narrow(0, 0, model_.range(unit).numel);
}

at::Tensor UnitGatherer::reduce_scatter(size_t unit, const at::Tensor& full_grad, at::ScalarType out_dtype) {
  const ShardRange& r = model_.range(unit);
  const auto opts = at::TensorOptions().dtype(model_.options().compute_dtype).device(model_.options().device);
  at::Tensor padded = at::zeros({r.padded_numel}, opts);
  padded.narrow(0, 0, r.numel).copy_(full_grad.reshape({-1}));
  at::Tensor shard = at::empty({r.shard_numel}, opts);
  const auto t0 = std::chrono::steady_clock::now();
  comm_.reduce_scatter(padded, shard, comm::ReduceOp::avg)->wait();
  stats.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stats.reduce_scatter_bytes += padded.numel() * padded.element_size();
  ++stats.reduce_scatters;
  return shard.to(out_dtype);
}

// ---------------------------------------------------------------------------------------------
// ShardedModel

ShardedModel::ShardedModel(model::ModelConfig config, const comm::ProcessGroup& group,
                           std::shared_ptr<comm::Communicator> comm, FsdpOptions options)
    : config_(std::move(config)),
      layout_(model::ModelLayout::build(config_)),
      group_(group),
      comm_(std::move(comm)),
      options_(options) {
  KTO_CHECK(comm_->size() == group_.size() && comm_->rank() == group_.rank(),
            "communicator and group disagree");
  // Trainable slices are fp32 masters (fp64 for fp64 runs); frozen ones live in the compute dtype.
  const at::ScalarType master = options_.compute_dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::ScalarType slice_dtype = options_.trainable ? master : options_.compute_dtype;
  for (const model::UnitLayout& unit : layout_.units) {
    const ShardRange r = shard_range(unit.numel, group_.size(), group_.rank());
    ranges_.push_back(r);
    shards_.push_back(
        at::zeros({r.shard_numel}, at::TensorOptions().dtype(slice_dtype).device(options_.device)));
    decay_segments_.push_back(fsdp::decay_segments(unit, r.begin, r.shard_numel));
  }
  if (options_.trainable) {
    for (at::Tensor& s : shards_) s.requires_grad_(true);
  }
  gatherer_ = std::make_unique<UnitGatherer>(*this, *comm_);
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
  for (size_t u = 0; u < shards_.size(); ++u) {
    const ShardRange& r = ranges_[u];
    at::Tensor send = shards_[u].detach().to(at::kFloat).contiguous();  // fp32 view of every slice
    at::Tensor full = at::empty({r.padded_numel}, send.options());
    comm_->all_gather(send, full)->wait();
    out.push_back(full.narrow(0, 0, r.numel).cpu());
  }
  return out;
}

int64_t ShardedModel::shard_bytes() const {
  int64_t bytes = 0;
  for (const at::Tensor& s : shards_) bytes += s.numel() * s.element_size();
  return bytes;
}

const CommStats& ShardedModel::comm_stats() const { return gatherer_->stats; }
void ShardedModel::reset_comm_stats() { gatherer_->stats = CommStats{}; }

std::vector<at::Tensor> ShardedModel::RunContext::as_list() const {
  return {cos, sin, causal, keys, sel_rows, sel_targets, sel_seq};
}

ShardedModel::RunContext ShardedModel::RunContext::from_list(const std::vector<at::Tensor>& l, int64_t batch,
                                                             int64_t seq_len) {
  KTO_CHECK(l.size() == 7, "RunContext needs 7 tensors, got ", l.size());
  RunContext c{l[0], l[1], l[2], l[3], l[4], l[5], l[6]};
  c.batch = batch;
  c.seq_len = seq_len;
  return c;
}

at::Tensor ShardedModel::run_unit(size_t unit, const std::vector<at::Tensor>& full, const at::Tensor& x,
                                  const RunContext& ctx) const {
  const model::UnitLayout& layout = layout_.units[unit];
  switch (layout.kind) {
    case model::UnitKind::embed: return model::embed_forward(model::bind_embed(layout, full[0]), x);
    case model::UnitKind::block: {
      model::AttentionInputs attn;
      attn.cos = ctx.cos;
      attn.sin = ctx.sin;
      attn.causal_TT = ctx.causal;
      if (ctx.keys.numel() > 0) attn.keys_B11T = ctx.keys;
      attn.causal_only = config_.sliding_window == 0 && !attn.keys_B11T.defined();
      return model::block_forward(config_, model::bind_block(layout, full[0]), x, attn);
    }
    case model::UnitKind::head: {
      const model::HeadWeights head = model::bind_head(layout, full[0]);
      const at::Tensor hidden = model::head_norm_forward(config_, head, x);
      const at::Tensor lm_head =
          head.lm_head.defined() ? head.lm_head : model::bind_embed(layout_.embed(), full.at(1)).table;
      model::TokenSelection sel;
      sel.rows = ctx.sel_rows;
      sel.targets = ctx.sel_targets;
      sel.seq = ctx.sel_seq;
      sel.batch = ctx.batch;
      sel.seq_len = ctx.seq_len;
      return model::sequence_logprob_sums(hidden, lm_head, sel, options_.logprob_chunk_rows);
    }
  }
  KTO_CHECK(false, "unknown unit kind");
}

at::Tensor ShardedModel::sequence_logprobs(const at::Tensor& ids_BT, const at::Tensor& attention_mask_BT,
                                           const model::TokenSelection& selection) {
  KTO_CHECK(ids_BT.dim() == 2, "input_ids must be [B, T], got ", ids_BT.sizes());
  const at::Device device = options_.device;
  const model::AttentionInputs attn = model::make_attention_inputs(config_, attention_mask_BT, ids_BT.size(1),
                                                                   options_.compute_dtype, device);
  const model::TokenSelection sel = selection.to(device);
  RunContext ctx;
  ctx.cos = attn.cos;
  ctx.sin = attn.sin;
  ctx.causal = attn.causal_TT;
  ctx.keys = attn.keys_B11T.defined() ? attn.keys_B11T : at::empty({0}, attn.causal_TT.options());
  ctx.sel_rows = sel.rows;
  ctx.sel_targets = sel.targets;
  ctx.sel_seq = sel.seq;
  ctx.batch = sel.batch;
  ctx.seq_len = sel.seq_len;
  const at::Tensor ids = ids_BT.to(device);
  const bool with_grad = options_.trainable && at::GradMode::is_enabled();
  return with_grad ? forward_with_grad(ids, ctx) : forward_no_grad(ids, ctx);
}

at::Tensor ShardedModel::forward_no_grad(const at::Tensor& ids, const RunContext& ctx) {
  at::NoGradGuard no_grad;
  const size_t n = layout_.units.size();
  at::Tensor x = ids;
  for (size_t u = 0; u < n; ++u) {
    const at::Tensor full = gatherer_->get(u);
    if (options_.prefetch && u + 1 < n) gatherer_->prefetch(u + 1);
    std::vector<at::Tensor> fulls{full};
    if (u == head_unit() && tied()) fulls.push_back(gatherer_->get(0));
    x = run_unit(u, fulls, x, ctx);
  }
  return x;
}

at::Tensor ShardedModel::forward_with_grad(const at::Tensor& ids, const RunContext& ctx) {
  return options_.reshard_after_forward ? forward_resharded(*this, ids, ctx) : forward_kept(*this, ids, ctx);
}

}  // namespace kto::fsdp
