// A distributed program in which one rank fails mid-step while the others wait in a
// collective. Used by abort_test.sh: the job must end on every rank, non-zero, naming the rank
// and the cause — never hang.
#include <chrono>
#include <thread>

#include "kto/comm/process_group.h"
#include "kto/util/check.h"

int main(int argc, char** argv) {
  return kto::comm::run_distributed_main("abort_probe", argc, argv, [](const kto::comm::ProcessGroup& world) {
    const int failing = world.size() - 1;
    world.barrier();
    if (world.rank() == failing) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      KTO_CHECK(false, "simulated failure in the middle of a step");
    }
    // The other ranks block here, in a collective the failing rank never joins.
    world.all_reduce(1.0, kto::comm::ReduceOp::sum);
    return 0;
  });
}
