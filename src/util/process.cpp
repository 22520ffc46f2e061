#include "kto/util/process.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "kto/util/check.h"

namespace kto {
namespace {

int env_int(std::initializer_list<const char*> names, int fallback) {
  for (const char* name : names) {
    if (const char* value = std::getenv(name); value != nullptr && *value != '\0') {
      return std::atoi(value);
    }
  }
  return fallback;
}

ProcessIdentity identity_from_environment() {
  ProcessIdentity id;
  id.rank = env_int({"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}, 0);
  id.world_size = env_int({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"}, 1);
  id.local_rank = env_int({"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}, 0);
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) == 0) id.host = host;
  if (id.host.empty()) id.host = "unknown-host";
  return id;
}

ProcessIdentity& mutable_identity() {
  static ProcessIdentity id = identity_from_environment();
  return id;
}

}  // namespace

const ProcessIdentity& process_identity() { return mutable_identity(); }

void set_process_identity(int rank, int world_size, int local_rank) {
  ProcessIdentity& id = mutable_identity();
  id.rank = rank;
  id.world_size = world_size;
  id.local_rank = local_rank;
}

std::string process_tag() {
  const ProcessIdentity& id = process_identity();
  return detail::str_cat("rank ", id.rank, " of ", id.world_size, " on ", id.host);
}

namespace detail {

void throw_check_failure(const char* file, int line, const char* what, const char* expr,
                         const std::string& message) {
  std::string text = str_cat(file, ":", line, ": ", what, ": `", expr, "`");
  if (!message.empty()) text += ": " + message;
  text += " [" + process_tag() + "]";
  throw Error(text);
}

}  // namespace detail
int compute_threads(int64_t requested, int processes_on_host, const std::string& what) {
  const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  const int64_t cores = online > 0 ? online : 1;
  const int64_t limit = std::min<int64_t>(4096, 4 * cores);
  if (requested < 0 || requested > limit) {
    throw Error(detail::str_cat(what, ": ", requested, " threads is outside [0, ", limit,
                                "] (0: automatic; at most 4 x the ", cores, " cores of this host)"));
  }
  if (requested > 0) return static_cast<int>(requested);
  if (const char* omp = std::getenv("OMP_NUM_THREADS"); omp != nullptr && std::atoi(omp) > 0)
    return static_cast<int>(std::min<int64_t>(limit, std::atoi(omp)));
  return static_cast<int>(std::max<int64_t>(1, cores / std::max(1, processes_on_host)));
}

}  // namespace kto
