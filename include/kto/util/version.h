// Version and build facts, for banners, --version and the provenance of checkpoints and datasets.
#pragma once

#include <string>

namespace kto {

const char* version();
// One line: "kto 0.1.0 (LibTorch 1.13.0, NCCL: yes, CUDA LibTorch: no)".
std::string build_summary();
// The current time in UTC, ISO 8601 ("2026-11-22T18:05:25Z"): when a file was created.
std::string utc_now();

}  // namespace kto
