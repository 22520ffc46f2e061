// Operating kto-train as a user does: stop signals (every rank stops at one step, checkpoints,
// exits 75 and resumes exactly; the handlers themselves are in tests/unit/test_util.cpp),
// launch/mpirun.sh, the start-up banner, and the progress line on a terminal and off it. The
// HTML report as a real browser draws it: test_report.cpp.
// ATen (through runs.h) brings LibTorch's glog, whose CHECK would replace Catch's if it came
// after catch.hpp: included first, Catch's CHECK wins.
#include <ATen/core/Tensor.h>

#include <catch2/catch.hpp>
#include <regex>

#include "kto/util/files.h"
#include "runs.h"
#include "test_support.h"

using Catch::Matchers::Contains;

namespace {

std::string source_dir() { return KTO_SOURCE_DIR; }
std::string train_bin() { return kto::test::bin_dir() + "/kto-train"; }
std::string mpirun_sh() { return source_dir() + "/launch/mpirun.sh"; }

// The step of "stopping at step N on request" in a log, or -1.
int stopped_at(const std::string& log) {
  std::smatch m;
  if (!std::regex_search(log, m, std::regex("stopping at step ([0-9]+) on request"))) return -1;
  return std::stoi(m[1]);
}

const std::vector<std::string> kLong = {"train.steps=150", "train.log_every=10", "train.export_final=true"};

}  // namespace

TEST_CASE(
    "SIGUSR1 stops after the current step with a checkpoint and status 75; the rerun ends exactly as an "
    "uninterrupted run",
    "[e2e][signals]") {
  kto::test::SyntheticTask task;
  const std::string straight = task.dir.file("straight"), stopped = task.dir.file("stopped");
  std::string log;
  REQUIRE(kto::test::run_command(train_bin() + train_args(task, straight, kLong), &log) == 0);

  const std::string cmd = train_bin() + train_args(task, stopped, kLong);
  const int status = kto::test::run_and_signal(cmd, stopped, 5, "kill -USR1 $PID", &log);
  INFO(log);
  REQUIRE(status == 75);
  const int step = stopped_at(log);
  REQUIRE(step >= 5);
  REQUIRE(step < 150);
  CHECK_THAT(log, Contains("(signal 10)"));
  CHECK(kto::path_exists(kto::test::step_dir(stopped, step) + "/manifest.yaml"));
  CHECK(kto::test::read_metrics(stopped).size() == static_cast<size_t>(step));
  CHECK(kto::path_exists(stopped + "/report.html"));  // the report of the run so far

  REQUIRE(kto::test::run_command(cmd, &log) == 0);
  CHECK_THAT(log, Contains("resumed from") && Contains(kto::test::step_dir(stopped, step)));
  CHECK(kto::test::read_metrics(stopped).size() == 150);
  kto::test::check_same_final_weights(straight, stopped);
}

TEST_CASE("a signal to one rank stops every rank at the same step (2 ranks under launch/mpirun.sh)",
          "[e2e][signals][mpi]") {
  kto::test::SyntheticTask task;
  const std::string straight = task.dir.file("straight"), stopped = task.dir.file("stopped");
  const std::string launcher = mpirun_sh() + " -n 2 --threads 1 --bind none -- " + train_bin();
  const std::vector<std::string> sets = {"train.steps=120", "train.log_every=10", "train.export_final=true",
                                         "data.micro_batch=4"};
  std::string log;
  REQUIRE(kto::test::run_command(launcher + train_args(task, straight, sets), &log) == 0);

  // Only rank 1 hears it; rank 0 learns of it in the step's stop vote.
  const std::string to_rank1 =
      "for p in $(pgrep -f 'kto-train.*" + stopped +
      "'); do if tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1; then "
      "kill -USR1 $p; echo signalled rank 1, pid $p; fi; done";
  const std::string cmd = launcher + train_args(task, stopped, sets);
  const int status = kto::test::run_and_signal(cmd, stopped, 5, to_rank1, &log);
  INFO(log);
  CHECK_THAT(log, Contains("signalled rank 1"));
  REQUIRE(status == 75);
  const int step = stopped_at(log);  // logged by rank 0, which got no signal
  REQUIRE(step >= 5);
  // The manifest is written only after every rank's shard is complete: both ranks saved this step.
  CHECK(kto::path_exists(kto::test::step_dir(stopped, step) + "/manifest.yaml"));

  REQUIRE(kto::test::run_command(cmd, &log) == 0);
  CHECK_THAT(log, Contains("resumed from"));
  kto::test::check_same_final_weights(straight, stopped);
}

TEST_CASE("SIGTERM to launch/mpirun.sh is a graceful stop too (mpirun alone would kill the ranks)",
          "[e2e][signals][mpi]") {
  kto::test::SyntheticTask task;
  const std::string run = task.run();
  std::string log;
  const int status = kto::test::run_and_signal(
      mpirun_sh() + " -n 2 --threads 1 -- " + train_bin() + train_args(task, run, kLong), run, 5,
      "kill -TERM $PID", &log);
  INFO(log);
  REQUIRE(status == 75);
  const int step = stopped_at(log);
  REQUIRE(step >= 5);
  CHECK(kto::path_exists(kto::test::step_dir(run, step) + "/manifest.yaml"));
}

TEST_CASE("start-up banner: build, world, every rank in order, model, memory, data per class, weights",
          "[e2e][operate][mpi]") {
  kto::test::SyntheticSpec spec;
  spec.keep_desirable = 0.5;
  kto::test::SyntheticTask task(spec);
  const std::string run = task.run();
  std::string log;
  REQUIRE(kto::test::run_command(std::string(KTO_MPIEXEC) + " -np 2 --oversubscribe " + train_bin() +
                                     train_args(task, run, {"train.steps=2", "data.micro_batch=4"}),
                                 &log) == 0);
  INFO(log);
  CHECK_THAT(log, Contains("build: kto "));
  CHECK_THAT(log, Contains("world: 2 rank(s), mpi collectives"));
  const size_t r0 = log.find("  rank 0: "), r1 = log.find("  rank 1: ");
  REQUIRE(r0 != std::string::npos);
  REQUIRE(r1 != std::string::npos);
  CHECK(r0 < r1);
  // (The synthetic model has 22688 parameters.)
  CHECK_THAT(log, Contains("model: llama, 22.7K parameters"));
  CHECK(std::regex_search(log, std::regex("memory: ~[0-9.]+ (B|KiB|MiB|GiB|TiB) per rank")));
  CHECK(
      std::regex_search(log, std::regex("data: [0-9]+ examples \\([0-9]+ desirable, [0-9]+ undesirable\\)")));
  CHECK(std::regex_search(log, std::regex("lambda_D [0-9.]+, lambda_U [0-9.]+")));
  // The same facts, in order, in run.json for the report.
  const std::string facts = kto::read_text_file(run + "/run.json");
  CHECK_THAT(facts, Contains("\"world\"") && Contains("\"data\"") && Contains("\"loss\""));
}

TEST_CASE("progress: one updating line on a terminal, plain lines otherwise", "[e2e][operate]") {
  kto::test::SyntheticTask task;
  auto cmd = [&](const std::string& run) {
    return train_bin() + train_args(task, run, {"train.steps=6", "train.log_every=2"});
  };
  std::string log;
  SECTION("not a terminal") {
    REQUIRE(kto::test::run_command(cmd(task.dir.file("plain")), &log) == 0);
    INFO(log);
    CHECK(log.find('\r') == std::string::npos);
    CHECK(log.find('\033') == std::string::npos);
    for (const char* s : {"step 2/6 |", "step 4/6 |", "step 6/6 |"}) CHECK_THAT(log, Contains(s));
    CHECK_THAT(log, Contains("| loss ") && Contains("| kl ") && Contains("| rew+ ") && Contains("| rew- ") &&
                        Contains(" tok/s") && Contains("| MFU ") && Contains("| ETA "));
  }
  SECTION("a terminal (util-linux script gives kto-train a pseudo-terminal)") {
    if (!kto::test::have_program("script")) kto::test::skip_test("util-linux 'script' is not installed");
    REQUIRE(kto::test::run_command("script -qec '" + cmd(task.dir.file("tty")) + "' /dev/null", &log) == 0);
    INFO(log);
    // Each update rewrites the line in place: carriage return + erase line, no newline between.
    CHECK_THAT(log, Contains("\r\033[2K[train] step 2/6 |"));
    CHECK_THAT(log, Contains("\r\033[2K[train] step 4/6 |"));
    const size_t a = log.find("step 2/6"), b = log.find("step 4/6");
    REQUIRE(b != std::string::npos);
    CHECK(log.substr(a, b - a).find('\n') == std::string::npos);
  }
  SECTION("a narrow terminal: the line is cut to its width, never wrapped") {
    if (!kto::test::have_program("script")) kto::test::skip_test("util-linux 'script' is not installed");
    REQUIRE(kto::test::run_command("COLUMNS=60 script -qec '" + cmd(task.dir.file("narrow")) + "' /dev/null",
                                   &log) == 0);
    INFO(log);
    int cut = 0;
    for (size_t at = log.find("\r\033[2K"); at != std::string::npos; at = log.find("\r\033[2K", at + 1)) {
      const size_t start = at + 5, end = log.find_first_of("\r\n", start);
      const std::string shown = log.substr(start, end - start);
      CHECK(shown.size() <= 61);  // 58 characters and the 3-byte ellipsis: 59 columns
      cut += shown.find("…") != std::string::npos;
    }
    CHECK(cut >= 2);
  }
}

TEST_CASE("launch/mpirun.sh: one rank per GPU, binding, environment and its options", "[e2e][launch]") {
  kto::test::TempDir dir;
  std::string out;
  SECTION("--help documents every option") {
    REQUIRE(kto::test::run_command(mpirun_sh() + " --help", &out) == 0);
    for (const char* opt : {"--ranks", "--per-node", "--threads", "--bind", "--hostfile", "--host", "--env",
                            "--mpirun-arg", "--dry-run", "Signals"}) {
      CHECK_THAT(out, Contains(opt));
    }
  }
  SECTION("defaults: one rank per GPU (a stand-in nvidia-smi reports 4), cores split between them") {
    kto::write_text_file(dir.file("nvidia-smi"),
                         "#!/bin/sh\nfor i in 0 1 2 3; do echo \"GPU $i: Stand-in (UUID: GPU-$i)\"; done\n");
    REQUIRE(kto::test::run_command("chmod +x " + dir.file("nvidia-smi")) == 0);
    REQUIRE(kto::test::run_command("env -u SLURM_JOB_ID PATH=" + dir.path() +
                                       ":$PATH KTO_PROBE=1 NCCL_DEBUG=INFO " + mpirun_sh() +
                                       " --dry-run -- --config c.yaml",
                                   &out) == 0);
    INFO(out);
    CHECK_THAT(out, Contains("-np 4 "));
    CHECK_THAT(out, Contains("ppr:4:node"));
    CHECK_THAT(out, Contains("-x KTO_PROBE") && Contains("-x NCCL_DEBUG") && Contains("-x OMP_NUM_THREADS"));
    CHECK_THAT(out, Contains("/bin/kto-train --config c.yaml"));
  }
  SECTION("ranks that fit the cores are bound to their own; more are oversubscribed") {
    REQUIRE(kto::test::run_command(
                "env -u SLURM_JOB_ID " + mpirun_sh() + " --dry-run -n 1 --threads 1 -- --config c", &out) ==
            0);
    CHECK_THAT(out, Contains("--map-by ppr:1:node:PE=1 --bind-to core"));
    REQUIRE(kto::test::run_command(
                "env -u SLURM_JOB_ID " + mpirun_sh() + " --dry-run -n 64 --threads 4 -- --config c", &out) ==
            0);
    CHECK_THAT(out, Contains("--bind-to none --oversubscribe"));
  }
  SECTION("a hostfile's slots say the ranks per node (no GPU here, none oversubscribed)") {
    kto::write_text_file(dir.file("hosts"),
                         "# two 8-GPU nodes\nnode1 slots=8\n\nnode2 slots=8 max_slots=8\n");
    REQUIRE(kto::test::run_command("env -u SLURM_JOB_ID PATH=/usr/bin:/bin " + mpirun_sh() +
                                       " --dry-run --hostfile " + dir.file("hosts") + " -- --config c",
                                   &out) == 0);
    INFO(out);
    CHECK_THAT(out, Contains("16 rank(s), 8 per node") && Contains("-np 16 ") && Contains("ppr:8:node"));
    CHECK_THAT(out, !Contains("--oversubscribe"));
    REQUIRE(kto::test::run_command("env -u SLURM_JOB_ID PATH=/usr/bin:/bin " + mpirun_sh() +
                                       " --dry-run --host a:4,b:4,c:4 -- --config c",
                                   &out) == 0);
    CHECK_THAT(out, Contains("12 rank(s), 4 per node") && !Contains("--oversubscribe"));
  }
  SECTION("bad options fail naming them") {
    CHECK(kto::test::run_command(mpirun_sh() + " --dry-run --bind socket -- x", &out) == 2);
    CHECK_THAT(out, Contains("--bind socket"));
    CHECK(kto::test::run_command(mpirun_sh() + " --dry-run -n zero -- x", &out) == 2);
    CHECK_THAT(out, Contains("'zero'"));
    CHECK(kto::test::run_command(mpirun_sh() + " --env 1BAD --dry-run -- x", &out) == 2);
    CHECK_THAT(out, Contains("1BAD"));
  }
}

TEST_CASE("a launch/slurm script run outside Slurm says to submit it with sbatch", "[e2e][launch]") {
  for (const char* script :
       {"single-node-srun", "single-node-mpirun", "multi-node-srun", "multi-node-mpirun"}) {
    std::string out;
    const std::string path = source_dir() + "/launch/slurm/" + script + ".sbatch";
    INFO(path);
    const int status =
        kto::test::run_command("env -u SLURM_JOB_ID -u SLURM_SUBMIT_DIR bash " + path + " x.yaml", &out);
    CHECK(status == 2);
    CHECK_THAT(out, Contains(std::string(script) + ".sbatch: not inside a Slurm job: submit it with sbatch"));
  }
}
