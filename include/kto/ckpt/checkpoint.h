// Checkpoints (DESIGN §8): one HDF5 shard per rank of a shard group plus a manifest, complete
// only when the manifest exists. Under hybrid sharding (fsdp/mesh.h) the group holding world
// rank 0 writes; the other groups' replicas are checked to hold the same state first.
//
//   <checkpoints>/step_00001200/shard_00003-of-00008.h5   rank 3's slices: for each unit u,
//                                                        /units/<u>/param (fp32 master) and
//                                                        /units/<u>/state<k> (optimizer state)
//   <checkpoints>/step_00001200/manifest.yaml            written last by rank 0: step, world size,
//       unit layouts, sampler state, optimizer, reference identity, resolved config, and the
//       sha256 and size of every shard
//
// Writing goes to step_X.tmp/, then (after a barrier and the manifest) one atomic rename. No rank
// ever holds more than its own slices. Loading re-slices: a rank reads, from whichever old
// shards overlap, exactly the elements it owns at the new world size — the same world size is
// the special case where the ranges coincide. No RNG state is stored: training consumes none
// (no dropout; the sampler is a pure function of seed and position).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kto/comm/process_group.h"
#include "kto/data/sampler.h"
#include "kto/fsdp/optimizer.h"
#include "kto/fsdp/sharded_model.h"

namespace kto::ckpt {

constexpr int64_t kFormatVersion = 1;

struct TrainingState {
  int64_t step = 0;
  data::SamplerState sampler;
};

struct UnitEntry {
  std::string name;
  int64_t numel = 0, padded_numel = 0, shard_numel = 0;
};

struct ShardEntry {
  std::string file;
  std::string sha256;
  int64_t bytes = 0;
};

struct Manifest {
  int64_t format_version = kFormatVersion;
  int64_t step = 0;
  int64_t world_size = 0;  // ranks of the run that saved it
  // Shards the state was saved in: the shard group's size (world_size under full sharding; with
  // hybrid sharding one group's ranks write, the replicas holding the same state).
  int64_t shard_group_size = 0;
  std::string optimizer;  // adamw | rmsprop
  int64_t optimizer_steps = 0;
  int64_t state_tensors = 0;  // optimizer state tensors per unit
  std::string master_dtype;   // float32 | float64
  data::SamplerState sampler;
  std::vector<UnitEntry> units;
  std::vector<ShardEntry> shards;
  std::string reference_identity;
  std::string model_source;  // the policy's Hugging Face directory, or "" for a random init
  // What the run trained on (data files, tokenizer, architecture, reference), key -> text, as
  // train::Trainer::identity() gives it; empty in checkpoints of an older kto.
  std::map<std::string, std::string> identity;
  std::string config_yaml;
  std::string created, producer;
};

// What a checkpoint records besides the model and optimizer state.
struct SaveRequest {
  std::string checkpoints_dir;  // step_<step>/ is written here
  TrainingState state;
  std::string config_yaml;         // the resolved config
  std::string reference_identity;  // what the reference model is (checked on resume)
  std::string model_source;        // the policy's Hugging Face directory, or "" for a random init
  std::map<std::string, std::string> identity;  // what the run trained on (checked on resume)
  int64_t keep = 3;                             // complete checkpoints to keep (the newest)
};

// Collective over `group` (the world). Writes step_<step> under request.checkpoints_dir, then
// deletes all but the newest request.keep complete checkpoints. Returns the checkpoint
// directory. With replicas, first compares a fingerprint of every rank's slices and optimizer
// state across its replica set, and refuses (kto::Error, every rank alike, nothing written) when
// they differ.
//
// Test seam (docs/testing.md): with KTO_FAULT_KILL_IN_CHECKPOINT=<step> in the environment,
// rank 0 dies by SIGKILL after every shard of that step is written and before the manifest, so
// tests can check that an interrupted checkpoint is never taken for a complete one.
std::string save(const SaveRequest& request, const fsdp::ShardedModel& policy,
                 const fsdp::ShardedOptimizer& optimizer, const comm::ProcessGroup& group);

// The newest complete checkpoint that verifies (manifest, shard sizes, checksums — each rank
// checks a share, the verdict is collective); "" when none. Incomplete or corrupted ones are
// reported and skipped. Leftover *.tmp directories are removed.
std::string find_latest(const std::string& checkpoints_dir, const comm::ProcessGroup& group);

// Throws kto::Error naming the file and the problem.
Manifest read_manifest(const std::string& checkpoint_dir);
// Problems found (missing or truncated shards, checksum mismatches) in shards i with
// i % stride == offset; empty when they verify.
std::vector<std::string> verify(const std::string& checkpoint_dir, const Manifest& manifest, int stride = 1,
                                int offset = 0);

// Collective. Loads the slices this rank owns (at any world size) into the policy and the
// optimizer state; returns the training state. Throws if the layouts do not match the model.
TrainingState load(const std::string& checkpoint_dir, fsdp::ShardedModel& policy,
                   fsdp::ShardedOptimizer& optimizer, const comm::ProcessGroup& group);

// Elements [begin, begin + out.numel()) of unit `unit`'s `what` ("param", "state0", ...) from
// the shards, converted to out's dtype; padding reads as zeros. For tools (export, inspect).
class Reader {
 public:
  explicit Reader(std::string checkpoint_dir);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  const Manifest& manifest() const { return manifest_; }
  void read(size_t unit, const std::string& what, int64_t begin, at::Tensor& out);

 private:
  struct Files;
  std::string dir_;
  Manifest manifest_;
  std::unique_ptr<Files> files_;
};

}  // namespace kto::ckpt
