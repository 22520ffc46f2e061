// Who this process is: rank, world size and host, for log lines and error messages.
//
// Before MPI is initialised the rank is taken from the launcher's environment (Open MPI, PMI,
// Slurm), so even an error during start-up names its rank. kto/comm sets the real values.
#pragma once

#include <string>

namespace kto {

struct ProcessIdentity {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string host;
};

const ProcessIdentity& process_identity();
void set_process_identity(int rank, int world_size, int local_rank);

// Compute threads for one process: `requested` if positive, else OMP_NUM_THREADS, else this
// host's cores divided among `processes_on_host`. Throws kto::Error naming `what` (a flag or a
// config key) for a negative request or one above 4 x the cores (at most 4096): more threads
// than that only thrash (100,000 hung the process).
int compute_threads(int64_t requested, int processes_on_host, const std::string& what);

}  // namespace kto
