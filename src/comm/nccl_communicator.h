// NcclCommunicator: tensor collectives on CUDA tensors with NCCL. Private to src/comm; built
// whenever NCCL is found (KTO_WITH_NCCL), usable only with a CUDA LibTorch.
#pragma once

#include "kto/comm/communicator.h"

namespace kto::comm {

// One GPU per rank: `device_index` is usually the local rank. Collective over `group`.
std::unique_ptr<Communicator> make_nccl_communicator(const ProcessGroup& group, int device_index);

}  // namespace kto::comm
