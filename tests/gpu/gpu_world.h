// The world process group of the GPU test binary.
#pragma once

#include "kto/comm/process_group.h"

namespace kto::test {
const comm::ProcessGroup& gpu_world();
}  // namespace kto::test
