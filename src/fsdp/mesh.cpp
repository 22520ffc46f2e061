#include "kto/fsdp/mesh.h"

#include "kto/util/check.h"

namespace kto::fsdp {

using detail::str_cat;

namespace {

// min and max of `value` over `group`.
std::pair<int64_t, int64_t> spread(const comm::ProcessGroup& group, int64_t value) {
  int64_t v[2] = {value, -value};
  group.all_reduce(v, 2, comm::ReduceOp::min);
  return {v[0], -v[1]};
}

}  // namespace

void Mesh::check(const comm::ProcessGroup& world, const ShardGroupSpec& spec) {
  checked_group_size(world, spec, *world.split_by_host());
}

int Mesh::checked_group_size(const comm::ProcessGroup& world, const ShardGroupSpec& spec,
                             const comm::ProcessGroup& host) {
  if (spec.kind == ShardGroupSpec::Kind::node) {
    const auto [fewest, most] = spread(world, host.size());
    if (fewest != most) {
      throw key_error(
          "", "dist.shard_group",
          str_cat("node needs the same number of ranks on every host; the hosts of this job have "
                  "between ",
                  fewest, " and ", most, " (launch as many ranks on each node, or give a group size)"));
    }
  }
  return spec.group_size(world.size(), host.size());
}

std::shared_ptr<const Mesh> Mesh::build(const comm::ProcessGroup& world, const ShardGroupSpec& spec,
                                        at::Device device, std::shared_ptr<comm::Communicator> world_comm) {
  std::shared_ptr<Mesh> m(new Mesh());
  const int W = world.size();
  // A host's id: the world rank of its first rank (MPI's notion of a host, as local_rank's).
  const std::unique_ptr<comm::ProcessGroup> host = world.split_by_host();
  int64_t host_id = world.rank();
  host->broadcast(&host_id, sizeof(host_id), 0);
  const int group_size = checked_group_size(world, spec, *host);
  // Node groups are the hosts; sized ones consecutive ranks.
  const int color =
      spec.kind == ShardGroupSpec::Kind::node ? static_cast<int>(host_id) : world.rank() / group_size;
  if (group_size == W) {
    m->shard_ = &world;
    m->shard_comm_ = std::move(world_comm);
  } else {
    m->owned_shard_ = world.split(color, world.rank());
    m->shard_ = m->owned_shard_.get();
    m->shard_comm_ = std::shared_ptr<comm::Communicator>(comm::make_communicator(*m->shard_, device));
    m->replica_ = world.split(m->shard_->rank(), world.rank());
    m->replica_comm_ = std::shared_ptr<comm::Communicator>(comm::make_communicator(*m->replica_, device));
    // Groups are numbered by their first ranks' order (the replica set of shard rank 0 is
    // ordered by world rank): world rank 0's group is 0.
    int64_t index = m->replica_->rank();
    m->shard_->broadcast(&index, sizeof(index), 0);
    m->group_index_ = static_cast<int>(index);
    const auto [lo_r, hi_r] = spread(*m->replica_, host_id);
    m->replica_spans_hosts_ = lo_r != hi_r;
  }
  const auto [lo, hi] = spread(*m->shard_, host_id);
  m->shard_spans_hosts_ = lo != hi;
  return m;
}

std::shared_ptr<const Mesh> Mesh::full(const comm::ProcessGroup& group,
                                       std::shared_ptr<comm::Communicator> comm) {
  std::shared_ptr<Mesh> m(new Mesh());
  m->shard_ = &group;
  m->shard_comm_ = std::move(comm);
  return m;
}

std::string sharding_text(int shard_size, int replicas, bool shard_spans_hosts, bool replica_spans_hosts) {
  const char* shard_link = shard_spans_hosts ? "across hosts" : "within a host";
  if (replicas <= 1) return str_cat("full sharding over ", shard_size, " rank(s) (", shard_link, ")");
  return str_cat("hybrid: ", replicas, " shard groups of ", shard_size, " rank(s) (sharded ", shard_link,
                 ", replicated ", replica_spans_hosts ? "across hosts" : "within a host", ")");
}

std::string Mesh::describe() const {
  return sharding_text(shard_->size(), replicas(), shard_spans_hosts_, replica_spans_hosts_);
}

}  // namespace kto::fsdp
