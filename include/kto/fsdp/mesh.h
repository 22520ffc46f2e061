// How the ranks share a model (DESIGN §5, docs/distributed.md): parameters, gradients and
// optimizer state are sharded within a shard group and replicated across groups (hybrid
// sharding, FSDP's HYBRID_SHARD). Each group's rank s holds the same slices as every other
// group's rank s; those ranks form this rank's replica set.
//
//   auto mesh = fsdp::Mesh::build(world, ShardGroupSpec::parse("node"), device, world_comm);
//   mesh->shard().size()     ranks one model is sharded over (the unit ranges' divisor)
//   mesh->replicas()         shard groups (1: full sharding, today's default)
//
// With one group (dist.shard_group: world) the shard group is the world and there is no replica
// set: everything runs exactly as full sharding.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>

#include "kto/comm/communicator.h"
#include "kto/comm/process_group.h"
#include "kto/fsdp/shard_group.h"

namespace kto::fsdp {

class Mesh {
 public:
  // Collective over `world`: splits it into shard groups of `spec` and the replica sets across
  // them, with a communicator for `device` on each. Throws kto::Error (every rank alike) when
  // the world does not divide into equal groups (naming dist.shard_group).
  static std::shared_ptr<const Mesh> build(const comm::ProcessGroup& world, const ShardGroupSpec& spec,
                                           at::Device device, std::shared_ptr<comm::Communicator> world_comm);
  // Collective over `world`: the refusals of build() alone (unequal hosts for node, a size that
  // does not divide the world), every rank alike — build() itself may also fail on one rank (a
  // communicator that cannot be made), so callers check first where a refusal must be orderly.
  static void check(const comm::ProcessGroup& world, const ShardGroupSpec& spec);
  // Full sharding over `group` with `comm` (no replicas; not collective).
  static std::shared_ptr<const Mesh> full(const comm::ProcessGroup& group,
                                          std::shared_ptr<comm::Communicator> comm);

  const comm::ProcessGroup& shard() const { return *shard_; }
  const std::shared_ptr<comm::Communicator>& shard_comm() const { return shard_comm_; }
  // The ranks holding this rank's slices, one per shard group; null without replicas.
  const comm::ProcessGroup* replica() const { return replica_.get(); }
  comm::Communicator* replica_comm() const { return replica_comm_.get(); }
  int replicas() const { return replica_ ? replica_->size() : 1; }
  // This rank's shard group, 0 for the group holding world rank 0 (the one that writes
  // checkpoints).
  int group_index() const { return group_index_; }
  // Whether a shard group / a replica set spans more than one host (its links are inter-node).
  bool shard_spans_hosts() const { return shard_spans_hosts_; }
  bool replica_spans_hosts() const { return replica_spans_hosts_; }
  // sharding_text of this mesh.
  std::string describe() const;

 private:
  Mesh() = default;
  // check() given the split of `world` by host; returns the shard group's size.
  static int checked_group_size(const comm::ProcessGroup& world, const ShardGroupSpec& spec,
                                const comm::ProcessGroup& host);
  const comm::ProcessGroup* shard_ = nullptr;
  std::unique_ptr<comm::ProcessGroup> owned_shard_, replica_;
  std::shared_ptr<comm::Communicator> shard_comm_, replica_comm_;
  int group_index_ = 0;
  bool shard_spans_hosts_ = false, replica_spans_hosts_ = false;
};

// "full sharding over 8 rank(s) (within a host)", "hybrid: 2 shard groups of 8 rank(s) (sharded
// within a host, replicated across hosts)".
std::string sharding_text(int shard_size, int replicas, bool shard_spans_hosts, bool replica_spans_hosts);

}  // namespace kto::fsdp
