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

}  // namespace kto
