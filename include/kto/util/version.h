// Version and build facts, for banners, --version and checkpoint metadata.
#pragma once

#include <string>

namespace kto {

const char* version();
// One line: "kto 0.1.0 (LibTorch 1.13.0, NCCL: yes, CUDA LibTorch: no)".
std::string build_summary();

}  // namespace kto
