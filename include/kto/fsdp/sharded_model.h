// A sharded model (DESIGN §5): every unit's flat buffer is padded to a multiple of the shard
// group's size S and the group's rank s owns elements [s*P/S, (s+1)*P/S). With one group (full
// sharding) S is the world size; with hybrid sharding (fsdp/mesh.h) every shard group holds the
// whole model and the gradients are averaged across the groups once per step
// (reduce_gradients_across_replicas).
//
// Policy (trainable): the owned slice is an fp32 master tensor (the autograd leaf). A forward
// all-gathers each unit in the compute dtype, runs it and frees it; with
// reshard_after_forward the backward gathers again, recomputes the unit with grad, backprops
// and reduce-scatters (average over ranks) the gradient into the slice — one custom autograd
// function per unit. Without it, the gathered unit stays alive until backward (more memory,
// no second all-gather, no recompute). While unit i computes, unit i+1's all-gather is in
// flight (reverse order in backward).
// Reference (frozen): compute-dtype slices, forward only.
//
// The model code (kto/model/forward.h) knows none of this: its one walk of the units runs on
// gathered buffers that src/fsdp/runners.cpp obtains, keeps or frees.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "kto/comm/communicator.h"
#include "kto/fsdp/mesh.h"
#include "kto/fsdp/optimizer.h"
#include "kto/io/safetensors.h"
#include "kto/model/layout.h"
#include "kto/model/logprob.h"
#include "kto/model/model_config.h"
#include "kto/model/packing.h"

namespace kto::model {
struct ForwardContext;
}

namespace kto::fsdp {

struct FsdpOptions {
  at::ScalarType compute_dtype = at::kFloat;
  at::Device device = at::kCPU;
  bool trainable = true;              // fp32 master slices with gradients (policy)
  bool reshard_after_forward = true;  // free gathered units after forward; recompute in backward
  bool prefetch = true;               // overlap the next unit's all-gather with compute
  int64_t logprob_chunk_rows = 0;     // 0: model::default_chunk_rows
};

// Which part of a unit's padded flat buffer a rank owns.
struct ShardRange {
  int64_t numel = 0;         // real elements of the unit
  int64_t padded_numel = 0;  // multiple of the world size
  int64_t shard_numel = 0;   // padded_numel / world
  int64_t begin = 0;         // this rank's first element
};
ShardRange shard_range(int64_t numel, int world_size, int rank);

// The parts of unit elements [begin, begin + count) that weight decay applies to, relative to
// `begin`: weight matrices and embeddings, not norms or biases.
std::vector<Segment> decay_segments(const model::UnitLayout& unit, int64_t begin, int64_t count);

struct CommStats {
  // Within the shard group:
  int64_t all_gather_bytes = 0;      // bytes received into full buffers
  int64_t reduce_scatter_bytes = 0;  // bytes of full gradients reduced
  int64_t all_gathers = 0, reduce_scatters = 0;
  // Across the replicas (hybrid sharding): bytes of gradient slices all-reduced.
  int64_t replica_all_reduce_bytes = 0, replica_all_reduces = 0;
  int64_t prefetch_hits = 0;  // get() calls whose all-gather was already in flight
  double wait_seconds = 0;    // host time blocked in wait()

  CommStats& operator+=(const CommStats& o) {
    all_gather_bytes += o.all_gather_bytes;
    reduce_scatter_bytes += o.reduce_scatter_bytes;
    all_gathers += o.all_gathers;
    reduce_scatters += o.reduce_scatters;
    replica_all_reduce_bytes += o.replica_all_reduce_bytes;
    replica_all_reduces += o.replica_all_reduces;
    prefetch_hits += o.prefetch_hits;
    wait_seconds += o.wait_seconds;
    return *this;
  }
};

class UnitGatherer;

// Estimated bytes per rank of sharded training (DESIGN §5): the policy's fp32 master and
// gradient (4 + 4 B per parameter) and its optimizer state (4 B per state tensor), the
// reference's compute-dtype shard when there is one, all divided by the shard group's size
// (`world_size` under full sharding), plus the
// largest unit gathered in the compute dtype (twice with reshard_after_forward: one computing,
// one prefetched). Activations are extra.
double training_bytes_per_rank(const model::ModelConfig& config, const model::ModelLayout& layout,
                               int world_size, int compute_bytes, int optimizer_state_tensors,
                               bool with_reference, bool reshard_after_forward);

// What one rank hands to collectives in one training step of `microbatches` microbatches, in
// bytes of the buffers (what CommStats counts): per microbatch the policy's units gathered for
// its walk (twice with reshard_after_forward: forward and backward; a tied head gathers the
// embedding again), the reference's (once), the policy's gradients reduce-scattered; per step,
// with replicas, the gradient slices all-reduced across them. Nothing moves within a shard
// group of one rank or across a single replica. docs/distributed.md derives the same figures.
struct StepCollectiveBytes {
  double gathered = 0, reduced = 0;  // within the shard group, compute dtype
  double replica_reduced = 0;        // across the replicas, master dtype (fp32; fp64 runs fp64)
  // Bytes each rank sends, by ring algorithms: (S - 1) / S of an all-gather's or
  // reduce-scatter's full buffer; 2 (R - 1) / R of an all-reduced buffer.
  double shard_link_bytes(int shard_size) const {
    return (gathered + reduced) * (shard_size - 1) / shard_size;
  }
  double replica_link_bytes(int replicas) const { return replica_reduced * 2.0 * (replicas - 1) / replicas; }
};
StepCollectiveBytes step_collective_bytes(const model::ModelLayout& layout, int shard_size, int replicas,
                                          int compute_bytes, int master_bytes, int64_t microbatches,
                                          bool with_reference, bool reshard_after_forward);
// The same from what was counted (CommStats of the policy and the reference together).
StepCollectiveBytes counted_collective_bytes(const CommStats& stats);

class ShardedModel {
 public:
  // Sharded over `mesh`'s shard group, replicated across its groups.
  ShardedModel(model::ModelConfig config, std::shared_ptr<const Mesh> mesh, FsdpOptions options);
  // Fully sharded over `group`.
  ShardedModel(model::ModelConfig config, const comm::ProcessGroup& group,
               std::shared_ptr<comm::Communicator> comm, FsdpOptions options)
      : ShardedModel(std::move(config), Mesh::full(group, std::move(comm)), options) {}
  ~ShardedModel();
  ShardedModel(const ShardedModel&) = delete;
  ShardedModel& operator=(const ShardedModel&) = delete;

  // Reads this rank's element ranges of every unit from a Hugging Face checkpoint (validated
  // against the layout first). No rank ever holds a whole unit of the checkpoint.
  void load(const io::SafetensorsSet& weights);
  // The same values model::DenseModel::init_random gives (every rank draws the full sequence
  // and keeps its slices: meant for tests and tiny demo models).
  void init_random(uint64_t seed, double std);

  // One forward's batch: right-padded [B, T] ids with their attention mask, or a packed
  // stream [1, N] with its layout (model/packing.h; no mask), and the tokens to score.
  struct Batch {
    at::Tensor ids_BT, attention_mask_BT;
    model::TokenSelection selection;
    std::shared_ptr<const model::PackedLayout> packed;  // null: padded
  };
  // Per-sequence completion log-prob sums [B] (fp32, fp64 for fp64 runs) of the selected
  // tokens. Differentiable with respect to the slices when trainable and grad mode is on.
  at::Tensor sequence_logprobs(const Batch& batch);
  at::Tensor sequence_logprobs(const at::Tensor& ids_BT, const at::Tensor& attention_mask_BT,
                               const model::TokenSelection& selection) {
    return sequence_logprobs(Batch{ids_BT, attention_mask_BT, selection, nullptr});
  }
  // The same for several batches in one walk of the units: each unit is gathered once and run
  // on every batch (the frozen reference's target and KL passes; the policy's). The first batch
  // is differentiable as sequence_logprobs's result is, the others never are (they run in the
  // forward only, also where units are recomputed in backward). A later batch may continue the
  // first (packed, with prefixes: the KL batch on the target batch's prompts). Each result is
  // what sequence_logprobs gives for that batch alone.
  std::vector<at::Tensor> sequence_logprobs_each(const std::vector<Batch>& batches);

  const model::ModelConfig& config() const { return config_; }
  const model::ModelLayout& layout() const { return layout_; }
  const FsdpOptions& options() const { return options_; }
  const ShardRange& range(size_t unit) const { return ranges_[unit]; }
  // This rank's slice of every unit (fp32 leaves when trainable, compute dtype otherwise).
  std::vector<at::Tensor>& shards() { return shards_; }
  const std::vector<at::Tensor>& shards() const { return shards_; }
  // Per slice, where weight decay applies (matrices and embeddings; not norms, biases or
  // padding), in slice coordinates.
  const std::vector<std::vector<Segment>>& decay_segments() const { return decay_segments_; }
  // Hybrid sharding: averages every slice's gradient over the replica set (one all-reduce per
  // slice, all in flight at once), so that every group holds the world's average gradient. Once
  // per step, after the last backward; a no-op under full sharding. Collective.
  void reduce_gradients_across_replicas();
  // Every unit's full flat buffer (unpadded, fp32), assembled on every rank. Collective.
  std::vector<at::Tensor> gather_full_units() const;
  // The same one unit at a time: `each(u, full)` on every rank, the buffer freed after it returns
  // (a rank that does not keep it holds one unit at most). Collective.
  void gather_full_units(const std::function<void(size_t unit, const at::Tensor& full)>& each) const;
  // Bytes of this rank's slices (parameters only).
  int64_t shard_bytes() const;
  const CommStats& comm_stats() const;
  void reset_comm_stats();
  // The ranks this model is sharded over (the world under full sharding).
  const comm::ProcessGroup& group() const { return mesh_->shard(); }
  const Mesh& mesh() const { return *mesh_; }
  // The communicator of the shard group (gathers, reduce-scatters, the gradient norm).
  comm::Communicator& shard_comm() const { return *mesh_->shard_comm(); }

 private:
  model::ModelConfig config_;
  model::ModelLayout layout_;
  std::shared_ptr<const Mesh> mesh_;
  FsdpOptions options_;
  std::vector<ShardRange> ranges_;
  std::vector<at::Tensor> shards_;
  std::vector<std::vector<Segment>> decay_segments_;
  std::unique_ptr<UnitGatherer> gatherer_;
  std::shared_ptr<model::ForwardContext> context_for(const Batch& batch) const;
};

// How a unit's weights are obtained and released: all-gathers on demand, with prefetch. get()
// returns a unit's full flat buffer in the compute dtype (unpadded view), waiting for an
// all-gather issued earlier by prefetch() if any; the buffer is freed when the last reference
// to it goes.
class UnitGatherer {
 public:
  UnitGatherer(const ShardedModel& model, comm::Communicator& comm);
  ~UnitGatherer();
  void prefetch(size_t unit);
  at::Tensor get(size_t unit);
  // Reduce-scatters a unit's full gradient (compute dtype; average over ranks) and adds it, in
  // the slice's dtype, to the slice's .grad. Asynchronous: a few are in flight at once (the
  // oldest lands when a further one is issued) and finish_gradients() lands the rest. At world
  // size 1 the gradient lands at once, without a copy.
  void reduce_scatter_grad(size_t unit, const at::Tensor& full_grad);
  void finish_gradients();
  // Tests every collective in flight, without blocking: MPI advances non-blocking collectives
  // only inside MPI calls, so the runners call this between units.
  void progress();
  const model::ModelLayout& layout() const;
  // This rank's slice of `unit` (the autograd leaf of a trainable model).
  const at::Tensor& slice(size_t unit) const;
  bool prefetching() const;
  CommStats stats;

 private:
  struct Pending;
  void land(size_t unit, const at::Tensor& shard_grad);
  const ShardedModel& model_;
  comm::Communicator& comm_;
  std::map<size_t, std::unique_ptr<Pending>> inflight_;             // all-gathers by unit
  std::vector<std::pair<size_t, std::unique_ptr<Pending>>> grads_;  // reduce-scatters, oldest first
};

}  // namespace kto::fsdp
