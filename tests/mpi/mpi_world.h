// The world process group of a multi-rank test binary (set up by mpi_main.cpp).
#pragma once

#include "kto/comm/process_group.h"

namespace kto::test {
const comm::ProcessGroup& world();
}  // namespace kto::test
