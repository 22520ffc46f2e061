// MpiCommunicator: tensor collectives on CPU tensors with non-blocking MPI. Private to src/comm.
#pragma once

#include "kto/comm/communicator.h"

namespace kto::comm {

std::unique_ptr<Communicator> make_mpi_communicator(const ProcessGroup& group);

}  // namespace kto::comm
