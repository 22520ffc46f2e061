// The one place that chooses a communicator by device; the only #ifdef on NCCL outside tests.
#include "kto/comm/communicator.h"

#include "kto/util/check.h"
#include "mpi_communicator.h"
#if KTO_WITH_NCCL
#include "nccl_communicator.h"
#endif

namespace kto::comm {

bool nccl_available() {
#if KTO_WITH_NCCL && KTO_TORCH_CUDA
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Communicator> make_communicator(const ProcessGroup& group, at::Device device) {
  if (device.is_cpu()) return make_mpi_communicator(group);
  if (device.is_cuda()) {
#if KTO_WITH_NCCL
    return make_nccl_communicator(group, device.has_index() ? device.index() : group.local_rank());
#else
    throw Error(
        "CUDA tensors need the NCCL communicator, and this build has none (configure with NCCL found)");
#endif
  }
  throw Error(detail::str_cat("no communicator for device ", device.str()));
}

}  // namespace kto::comm
