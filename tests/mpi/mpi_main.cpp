// Catch2 main for multi-rank tests: every rank runs every test; each rank's report goes to its
// own file, the failure counts are summed over ranks, rank 0 prints its report and every rank
// that failed prints its own, and all ranks exit with the same status.
#define CATCH_CONFIG_RUNNER
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "kto/comm/process_group.h"
#include "mpi_world.h"

namespace kto::test {
const comm::ProcessGroup* g_world = nullptr;
const comm::ProcessGroup& world() { return *g_world; }
std::string shared_temp_dir(const std::string& prefix) {
  std::string dir;
  if (g_world->is_root()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
    const char* made = ::mkdtemp(pattern.data());
    if (made == nullptr) throw std::runtime_error("mkdtemp " + pattern + " failed");
    dir = made;
  }
  g_world->broadcast(dir, 0);
  return dir;
}

}  // namespace kto::test

int main(int argc, char** argv) {
  kto::comm::Runtime runtime(&argc, &argv);
  const auto& world = runtime.world();
  kto::test::g_world = &world;

  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  const std::string report = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
                             "/kto-mpi-tests-" + std::to_string(::getpid()) + "-r" +
                             std::to_string(world.rank()) + ".txt";
  session.configData().outputFilename = report;
  session.configData().useColour = Catch::UseColour::No;
  const int failed = session.run();
  const int64_t total_failed = world.all_reduce(static_cast<int64_t>(failed), kto::comm::ReduceOp::sum);

  std::stringstream text;
  text << std::ifstream(report).rdbuf();
  std::remove(report.c_str());
  for (int r = 0; r < world.size(); ++r) {
    if (r == world.rank() && (r == 0 || failed != 0)) {
      std::cout << "==== rank " << r << " of " << world.size() << (failed ? " (FAILED)" : "") << " ====\n"
                << text.str() << std::flush;
    }
    world.barrier();
  }
  return total_failed == 0 ? 0 : 1;
}
