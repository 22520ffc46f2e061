// The MPI reduction of a ReduceOp (avg is a sum, divided afterwards). Private to src/comm.
#pragma once

#include <mpi.h>

#include "kto/comm/process_group.h"

namespace kto::comm {

inline MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}

}  // namespace kto::comm
