// dist.shard_group (docs/distributed.md): which ranks one copy of the model is sharded over.
// No LibTorch, no MPI: the config parser validates it; fsdp/mesh.h builds the groups.
#pragma once

#include <string>

namespace kto::fsdp {

struct ShardGroupSpec {
  enum class Kind { world, node, size } kind = Kind::world;
  int size = 0;  // Kind::size: consecutive groups of this many ranks
  // "world", "node" or a positive number; throws kto::ConfigError naming `source` and `key`.
  static ShardGroupSpec parse(const std::string& text, const std::string& source = "",
                              const std::string& key = "dist.shard_group");
  // Ranks per shard group at `world_size` ranks with `ranks_per_host` on every host; throws
  // kto::ConfigError (dist.shard_group) when the groups would not all be the same size.
  int group_size(int world_size, int ranks_per_host) const;
};

}  // namespace kto::fsdp
