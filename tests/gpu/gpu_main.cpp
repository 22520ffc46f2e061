// GPU tests: NCCL collectives and the sharded model on CUDA. Without a CUDA LibTorch, NCCL or
// a GPU they exit with status 77, which ctest reports as "Skipped" (SKIP_RETURN_CODE) — visibly
// skipped, never silently passed.
#define CATCH_CONFIG_RUNNER
#include <ATen/Context.h>

#include <catch2/catch.hpp>
#include <cstdio>

#include "gpu_world.h"
#include "kto/comm/communicator.h"

namespace kto::test {
const comm::ProcessGroup* g_gpu_world = nullptr;
const comm::ProcessGroup& gpu_world() { return *g_gpu_world; }
}  // namespace kto::test

int main(int argc, char** argv) {
  if (!kto::comm::nccl_available()) {
    std::printf(
        "SKIPPED: this build has no NCCL communicator usable with CUDA tensors (needs NCCL and a CUDA "
        "LibTorch)\n");
    return 77;
  }
  if (!at::hasCUDA()) {
    std::printf("SKIPPED: no CUDA device visible\n");
    return 77;
  }
  kto::comm::Runtime runtime(&argc, &argv);
  kto::test::g_gpu_world = &runtime.world();
  const int failed = Catch::Session().run(argc, argv);
  const int64_t total = runtime.world().all_reduce(static_cast<int64_t>(failed), kto::comm::ReduceOp::sum);
  return total == 0 ? 0 : 1;
}
