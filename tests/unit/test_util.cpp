// util: check macros (file:line, expression, rank, host), rank-aware logging, CLI parsing,
// atomic files.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdio>

#include "kto/util/check.h"
#include "kto/util/check_h5.h"
#include "kto/util/cli.h"
#include "kto/util/files.h"
#include "kto/util/log.h"
#include "kto/util/process.h"
#include "kto/util/signals.h"
#include "test_support.h"
#ifdef KTO_TEST_NCCL
#include "kto/util/check_cuda.h"
#include "kto/util/check_nccl.h"
#endif

using Catch::Matchers::Contains;

namespace {

std::string read_all(FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string text;
  char buf[512];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  return text;
}

// Restores rank 0 of 1 after a test pretends to be another rank.
struct IdentityGuard {
  ~IdentityGuard() { kto::set_process_identity(0, 1, 0); }
};

}  // namespace

TEST_CASE("KTO_CHECK reports file:line, the expression, the message, rank and host", "[util]") {
  const int value = 3;
  try {
    KTO_CHECK(value == 4, "value was ", value);
    FAIL("no throw");
  } catch (const kto::Error& e) {
    const std::string m = e.what();
    CHECK_THAT(m, Contains("tests/unit/test_util.cpp:"));
    CHECK_THAT(m, Contains("`value == 4`"));
    CHECK_THAT(m, Contains("value was 3"));
    CHECK_THAT(m, Contains("rank 0 of 1 on " + kto::process_identity().host));
  }
  CHECK_NOTHROW([&] { KTO_CHECK(value == 3, "fine"); }());
}

TEST_CASE("KTO_H5_CHECK returns values and turns failures into errors with HDF5's stack", "[util]") {
  const hid_t plist = KTO_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS));
  CHECK(plist >= 0);
  KTO_H5_CHECK(H5Pclose(plist));
  try {
    KTO_H5_CHECK(H5Fopen("/nonexistent/kto.h5", H5F_ACC_RDONLY, H5P_DEFAULT));
    FAIL("no throw");
  } catch (const kto::Error& e) {
    const std::string m = e.what();
    CHECK_THAT(m, Contains("HDF5 call failed") && Contains("H5Fopen(\"/nonexistent/kto.h5\"") &&
                      Contains("test_util.cpp:") && Contains("rank 0"));
    CHECK_THAT(m, Contains("unable to open file"));
  }
}

#ifdef KTO_TEST_NCCL
TEST_CASE("KTO_CUDA_CHECK and KTO_NCCL_CHECK name the library's error (no GPU needed)", "[util][nccl]") {
  CHECK_THROWS_WITH(KTO_CUDA_CHECK(cudaErrorInvalidValue),
                    Contains("CUDA call failed") && Contains("cudaErrorInvalidValue") && Contains("rank 0"));
  CHECK_NOTHROW(KTO_CUDA_CHECK(cudaSuccess));
  CHECK_THROWS_WITH(KTO_NCCL_CHECK(ncclInvalidArgument),
                    Contains("NCCL call failed") && Contains("invalid argument"));
  CHECK_NOTHROW(KTO_NCCL_CHECK(ncclSuccess));
}
#endif

TEST_CASE("logging: rank 0 by default, rank-tagged lines from every rank on request", "[util][log]") {
  IdentityGuard restore;
  FILE* out = std::tmpfile();
  FILE* err = std::tmpfile();
  kto::log::set_streams(out, err);
  kto::set_process_identity(1, 4, 1);
  kto::log::info("data", "only rank 0 says this");
  kto::log::info_all("comm", "every rank says ", 42);
  kto::log::warn("ckpt", "careful");
  kto::log::error("train", "bad");
  kto::set_process_identity(0, 4, 0);
  kto::log::info("data", "rank 0 speaks");
  kto::log::debug("data", "hidden at info level");
  kto::log::set_streams(nullptr, nullptr);
  const std::string o = read_all(out), e = read_all(err);
  std::fclose(out);
  std::fclose(err);
  CHECK_THAT(o, !Contains("only rank 0 says this"));
  CHECK_THAT(o, Contains("[comm r1@") && Contains("] every rank says 42"));
  CHECK_THAT(o, Contains("[data] rank 0 speaks"));
  CHECK_THAT(o, !Contains("hidden at info level"));
  CHECK_THAT(e, !Contains("careful"));  // warn is rank 0 only
  CHECK_THAT(e, Contains("[train r1@") && Contains("error: bad"));
  CHECK(kto::log::parse_level("warn") == kto::log::Level::warn);
  CHECK_THROWS_WITH(kto::log::parse_level("loud"), Contains("loud"));
}

TEST_CASE("CLI options: forms, repeats and errors", "[util][cli]") {
  std::string model;
  int64_t n = 5;
  bool flag = false;
  std::vector<std::string> sets;
  auto make = [&]() {
    model.clear();
    sets.clear();
    flag = false;
    kto::cli::Args a("tool", "does things");
    a.option("--model", &model, "DIR", "model dir", kto::cli::required)
        .option("--n", &n, "N", "a count")
        .flag("--fast", &flag, "go fast")
        .list("--set", &sets, "K=V", "override");
    return a;
  };
  auto parse = [&](std::vector<std::string> words) {
    words.insert(words.begin(), "tool");
    std::vector<char*> argv;
    for (auto& w : words) argv.push_back(w.data());
    auto a = make();
    return a.parse(static_cast<int>(argv.size()), argv.data());
  };
  CHECK(parse({"--model", "m", "--n=7", "--fast", "--set", "a=1", "--set=b=2"}));
  CHECK(model == "m");
  CHECK(n == 7);
  CHECK(flag);
  CHECK(sets == std::vector<std::string>{"a=1", "b=2"});
  CHECK_THROWS_WITH(parse({"--n", "3"}), Contains("missing required --model"));
  CHECK_THROWS_WITH(parse({"--model", "m", "--bogus"}), Contains("unknown argument '--bogus'"));
  CHECK_THROWS_WITH(parse({"--model"}), Contains("--model needs a value"));
  CHECK_THROWS_WITH(parse({"--model", "m", "--n", "x7"}), Contains("--n: expected an integer"));
  CHECK_THROWS_WITH(parse({"--model", "a", "--model", "b"}), Contains("given twice"));
  CHECK_THROWS_AS(parse({"--model", "m", "--fast=yes"}), kto::cli::UsageError);
  CHECK_FALSE(parse({"--help"}));
  CHECK_THAT(make().usage(), Contains("--model DIR") && Contains("(required)") && Contains("does things"));
  CHECK(kto::cli::run_main("t", [] { return 0; }) == 0);
  CHECK(kto::cli::run_main("t", []() -> int { throw kto::cli::UsageError("bad usage"); }) == 2);
  CHECK(kto::cli::run_main("t", []() -> int { throw kto::Error("boom"); }) == 1);
}

TEST_CASE("AtomicFile: all or nothing", "[util][files]") {
  kto::test::TempDir dir;
  const std::string path = dir.file("x.txt");
  kto::write_text_file(path, "old");
  {
    kto::AtomicFile f(path);
    f.write("new content");
    // destroyed without commit, as when an exception unwinds
  }
  CHECK(kto::read_text_file(path) == "old");
  std::string listing;
  kto::test::run_command("ls -A '" + dir.path() + "'", &listing);
  CHECK(listing == "x.txt\n");  // no temporary left behind
  kto::write_text_file(path, "new");
  CHECK(kto::read_text_file(path) == "new");
  CHECK_THROWS_WITH(kto::read_text_file(dir.file("missing")), Contains("missing") && Contains("cannot open"));
  CHECK_THROWS_WITH(kto::write_text_file(dir.file("no/such/dir/f"), "x"), Contains("no/such/dir/f"));
  kto::make_directories(dir.file("a/b/c"));
  CHECK(kto::is_directory(dir.file("a/b/c")));
}

// Each case runs in a forked child, so the handlers and flags never touch the test process.
namespace {
int in_child(void (*body)()) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    body();
    std::_Exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
}  // namespace

TEST_CASE("stop signals: USR1, TERM and a first Ctrl-C ask to stop; a second Ctrl-C exits at once (130)",
          "[util][signals]") {
  for (int sig : {SIGUSR1, SIGTERM, SIGINT}) {
    static int s_sig;
    s_sig = sig;
    // The child exits 42 when the flag records this signal.
    CHECK(in_child([] {
            kto::signals::install_stop_handlers(/*announce=*/false);
            if (kto::signals::stop_requested()) std::_Exit(1);
            std::raise(s_sig);  // delivered before raise returns
            std::_Exit(kto::signals::stop_requested() && kto::signals::stop_signal() == s_sig ? 42 : 2);
          }) == 42);
  }
  CHECK(in_child([] {
          kto::signals::install_stop_handlers(/*announce=*/false);
          std::raise(SIGINT);
          if (!kto::signals::stop_requested()) std::_Exit(1);
          std::raise(SIGINT);  // the second: _exit(130) inside the handler
          std::_Exit(2);
        }) == 130);
  CHECK(in_child([] {
          kto::signals::install_stop_handlers(/*announce=*/false);
          std::raise(SIGUSR1);
          std::raise(SIGTERM);  // a later, different signal keeps the first as the reason
          std::_Exit(kto::signals::stop_signal() == SIGUSR1 ? 42 : 2);
        }) == 42);
  CHECK(kto::signals::kExitStopped == 75);
}
