#include "kto/fsdp/shard_group.h"

#include <cstdlib>

#include "kto/util/check.h"

namespace kto::fsdp {

using detail::str_cat;

ShardGroupSpec ShardGroupSpec::parse(const std::string& text, const std::string& source,
                                     const std::string& key) {
  ShardGroupSpec s;
  if (text == "world") return s;
  if (text == "node") {
    s.kind = Kind::node;
    return s;
  }
  char* end = nullptr;
  const long n = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || end == nullptr || *end != '\0' || n < 1 || n > (1 << 20)) {
    throw key_error(source, key,
                    "'" + text +
                        "' is not a shard group: world (shard over every rank), node (the ranks of one host) "
                        "or a positive number of consecutive ranks");
  }
  s.kind = Kind::size;
  s.size = static_cast<int>(n);
  return s;
}

int ShardGroupSpec::group_size(int world_size, int ranks_per_host) const {
  const int n = kind == Kind::world ? world_size : kind == Kind::node ? ranks_per_host : size;
  if (n < 1 || n > world_size || world_size % n != 0) {
    throw key_error("", "dist.shard_group",
                    str_cat(kind == Kind::node ? str_cat("node (", n, " rank(s) per host)") : str_cat(n),
                            " does not divide the world of ", world_size,
                            " rank(s) into equal shard groups (use a divisor of ", world_size,
                            ", node with the same number of ranks on every host, or world)"));
  }
  return n;
}

}  // namespace kto::fsdp
