// The world process group of a multi-rank test binary (set up by mpi_main.cpp).
#pragma once

#include <string>

#include "kto/comm/process_group.h"

namespace kto::test {
const comm::ProcessGroup& world();
// A fresh directory under $TMPDIR (or /tmp) made by rank 0, its path broadcast to every rank
// (collective). The caller removes it.
std::string shared_temp_dir(const std::string& prefix);
}  // namespace kto::test
