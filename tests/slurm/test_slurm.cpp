// kto under a real Slurm: tests/slurm/cluster.sh starts a private cluster (Debian's munged,
// slurmctld and slurmd, configured in a temp dir, stopped by pid afterwards) of one node, or of
// two network-namespace nodes (tests/multinode/two_nodes.sh); the tests submit the project's own
// sbatch scripts (launch/slurm/) with a tiny config and check what the jobs leave behind — the
// multi-node scripts across two nodes with hybrid sharding — and that a job preempted mid-run
// checkpoints, is requeued, resumes and ends with the same weights as an uninterrupted run.
// Without slurm-wlm/munge (or root, or namespaces for two nodes) they exit 77: skipped.
#include <unistd.h>

// ATen (through runs.h) brings LibTorch's glog, whose CHECK would replace Catch's if it came
// after catch.hpp: included first, Catch's CHECK wins.
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "kto/ckpt/checkpoint.h"
#include "kto/util/files.h"
#include "runs.h"
#include "test_support.h"

using Catch::Matchers::Contains;

namespace {

std::string source_dir() { return KTO_SOURCE_DIR; }

class Cluster {
 public:
  // One node, or the two of `nodes` (which must outlive the cluster).
  explicit Cluster(const kto::test::TwoNodes* nodes = nullptr)
      : nodes_(nodes), state_dir_(dir_.file("slurm")) {
    std::string out;
    const int rc = kto::test::run_command(source_dir() + "/tests/slurm/cluster.sh start " + state_dir_ + " " +
                                              std::to_string(::getpid()) + (nodes ? " " + nodes->dir() : ""),
                                          &out);
    if (rc == 77) kto::test::skip_test(out);
    INFO(out);
    REQUIRE(rc == 0);
  }
  ~Cluster() { kto::test::run_command(source_dir() + "/tests/slurm/cluster.sh stop " + state_dir_); }
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // A shell command prefix that points Slurm's clients at this cluster (on its first node).
  std::string env() const {
    return "SLURM_CONF=" + state_dir_ + "/slurm.conf " + (nodes_ ? nodes_->on("a") : "");
  }

  // Submits a launch/slurm script from `submit_dir` with test-sized resources (2 tasks on each
  // of the cluster's nodes); returns the job id.
  int submit(const std::string& script, const std::string& submit_dir, const std::string& args) const {
    std::string out;
    const std::string cmd = "cd " + submit_dir + " && KTO_ROOT=" + source_dir() +
                            " KTO_BUILD_DIR=" + kto::test::bin_dir() + "/.. " + env() +
                            "sbatch --parsable --job-name=kto-test --nodes=" + (nodes_ ? "2" : "1") +
                            " --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 --time=20 " +
                            source_dir() + "/launch/slurm/" + script + " " + args;
    INFO(cmd);
    const int rc = kto::test::run_command(cmd, &out);
    INFO(out);
    REQUIRE(rc == 0);
    return std::stoi(out);
  }

  // scontrol's view of a job: JobState, Reason, Restarts, ExitCode, ...
  std::map<std::string, std::string> job(int id) const {
    std::string out;
    kto::test::run_command(env() + "scontrol show job -o " + std::to_string(id), &out);
    std::map<std::string, std::string> fields;
    std::istringstream words(out);
    std::string word;
    while (words >> word) {
      const size_t eq = word.find('=');
      if (eq != std::string::npos) fields[word.substr(0, eq)] = word.substr(eq + 1);
    }
    return fields;
  }

  // Waits (up to `seconds`) for the job to end; returns its final fields. (A requeued job is held
  // back for the cluster's cred_expire, 10 s, before it starts again.)
  std::map<std::string, std::string> wait(int id, int seconds = 300) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      auto fields = job(id);
      const std::string state = fields["JobState"];
      for (const char* done : {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                               "BOOT_FAIL", "DEADLINE"}) {
        if (state == done) return fields;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return job(id);
  }

  // The end of slurmctld's and slurmd's logs, for failure messages.
  std::string logs() const {
    std::string out;
    kto::test::run_command(
        "tail -n 40 " + state_dir_ + "/log/slurmctld.log " + state_dir_ + "/log/slurmd-*.log", &out);
    return out;
  }

  std::string scancel(const std::string& options, int id) const {
    std::string out;
    kto::test::run_command(env() + "scancel " + options + " " + std::to_string(id), &out);
    return out;
  }

 private:
  const kto::test::TwoNodes* nodes_;
  kto::test::TempDir dir_;
  std::string state_dir_;
};

// The job's output file, %x-%j.out in the submit directory.
std::string job_output(const std::string& submit_dir, int id) {
  const std::string path = submit_dir + "/kto-test-" + std::to_string(id) + ".out";
  return kto::path_exists(path) ? kto::read_text_file(path) : "(no " + path + ")";
}

// Polls until `path` has at least `lines` lines (or `seconds` pass); returns whether it did.
bool wait_for_lines(const std::string& path, size_t lines, int seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (kto::path_exists(path)) {
      const std::string text = kto::read_text_file(path);
      if (static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) >= lines) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// A finished job: scontrol's fields and its output file.
struct Finished {
  std::map<std::string, std::string> fields;
  std::string output;
};

// Waits for job `id` and requires that it completed with exit code 0; failure messages carry the
// job's output and the daemons' logs.
Finished wait_completed(const Cluster& cluster, int id, const std::string& submit_dir) {
  Finished job{cluster.wait(id), job_output(submit_dir, id)};
  INFO(job.output);
  INFO(cluster.logs());
  REQUIRE(job.fields.at("JobState") == "COMPLETED");
  CHECK(job.fields.at("ExitCode") == "0:0");
  return job;
}

}  // namespace

TEST_CASE("each launch/slurm script trains a tiny config under real Slurm: metrics, checkpoint, report",
          "[slurm]") {
  for (const char* script : {"single-node-srun.sbatch", "single-node-mpirun.sbatch", "multi-node-srun.sbatch",
                             "multi-node-mpirun.sbatch"}) {
    DYNAMIC_SECTION(script) {
      // (The multi-node scripts run on this cluster's one node: --nodes=1 overrides their 2.)
      Cluster cluster;
      kto::test::SyntheticTask task;
      const std::string submit = task.dir.path();
      const int id =
          cluster.submit(script, submit, "config.yaml --set train.steps=30 --set train.export_final=true");
      const std::string output = wait_completed(cluster, id, submit).output;
      INFO(output);
      // The run directory is keyed to the job.
      const std::string run = submit + "/runs/kto-test-" + std::to_string(id);
      CHECK(kto::test::read_metrics(run).size() == 30);
      CHECK(kto::path_exists(kto::test::step_dir(run, 30) + "/manifest.yaml"));
      CHECK(kto::path_exists(run + "/final/config.json"));
      CHECK(kto::path_exists(run + "/report.html"));
      // run.json holds the banner's facts as [key, value] pairs; the job is one of them.
      const auto facts = nlohmann::json::parse(kto::read_text_file(run + "/run.json"));
      CHECK(std::count(facts.begin(), facts.end(),
                       nlohmann::json::array({"slurm job", std::to_string(id)})) == 1);
      CHECK_THAT(output, Contains("world: 2 rank(s)") && Contains("[kto-slurm] done"));
    }
  }
}

TEST_CASE("the multi-node sbatch scripts train across two nodes with hybrid sharding", "[slurm][multinode]") {
  for (const char* script : {"multi-node-srun.sbatch", "multi-node-mpirun.sbatch"}) {
    DYNAMIC_SECTION(script) {
      kto::test::SyntheticTask task;
      const kto::test::TwoNodes nodes(task.dir.file("nodes"));
      Cluster cluster(&nodes);
      const std::string submit = task.dir.path();
      const int id = cluster.submit(script, submit,
                                    "config.yaml --set train.steps=10 --set train.export_final=true "
                                    "--set data.micro_batch=4 --set dist.shard_group=node");
      const std::string output = wait_completed(cluster, id, submit).output;
      INFO(output);
      // Slurm's environment reached every rank: 2 ranks on each node, local ranks 0 and 1 on each,
      // one shard group per node.
      CHECK_THAT(output, Contains("world: 4 rank(s)"));
      CHECK_THAT(output, Contains("rank 1: kto-node-") && Contains("-a, cpu, 1 thread(s), local rank 1"));
      CHECK_THAT(output, Contains("rank 2: kto-node-") && Contains("-b, cpu, 1 thread(s), local rank 0"));
      CHECK_THAT(
          output,
          Contains("hybrid: 2 shard groups of 2 rank(s) (sharded within a host, replicated across hosts)"));
      const std::string run = submit + "/runs/kto-test-" + std::to_string(id);
      CHECK(kto::test::read_metrics(run).size() == 10);
      CHECK(kto::ckpt::read_manifest(kto::test::step_dir(run, 10)).shard_group_size == 2);
      CHECK(kto::path_exists(run + "/final/config.json"));
    }
  }
}

TEST_CASE(
    "preempted mid-run (USR1): the job checkpoints, is requeued, resumes and ends with the weights of an "
    "uninterrupted run",
    "[slurm][signals]") {
  // srun style: Slurm's --signal=USR1 goes to every task (scancel --signal=USR1 does the same);
  // mpirun style: --signal=B:USR1 goes to the batch shell, which passes it on through mpirun.
  const std::vector<std::pair<std::string, std::string>> styles = {
      {"single-node-srun.sbatch", "--signal=USR1"}, {"single-node-mpirun.sbatch", "--batch --signal=USR1"}};
  for (const auto& [script, how] : styles) {
    DYNAMIC_SECTION(script << ", scancel " << how) {
      Cluster cluster;
      kto::test::SyntheticTask task;
      const std::string submit = task.dir.path();
      const std::string sets =
          " --set train.steps=150 --set train.log_every=10 --set train.export_final=true";
      // The uninterrupted run: the same config on 2 ranks, outside Slurm.
      const std::string straight = task.dir.file("straight");
      std::string log;
      REQUIRE(kto::test::run_command(std::string(KTO_MPIEXEC) + " -np 2 --oversubscribe " +
                                         kto::test::bin_dir() + "/kto-train --config " + task.config +
                                         " --set run.dir=" + straight + sets,
                                     &log) == 0);

      const int id = cluster.submit(script, submit, "config.yaml" + sets);
      const std::string run = submit + "/runs/kto-test-" + std::to_string(id);
      REQUIRE(wait_for_lines(run + "/metrics.jsonl", 5, 120));
      const std::string said = cluster.scancel(how, id);
      INFO(said);
      const auto [fields, output] = wait_completed(cluster, id, submit);
      INFO(output);
      CHECK(fields.at("Restarts") == "1");  // requeued once
      std::smatch m;
      REQUIRE(
          std::regex_search(output, m, std::regex("stopping at step ([0-9]+) on request \\(signal 10\\)")));
      const int step = std::stoi(m[1]);
      CHECK(step >= 5);
      CHECK(step < 150);
      CHECK_THAT(output, Contains("requeueing job " + std::to_string(id)));
      CHECK_THAT(output, Contains("job " + std::to_string(id) + " (restart 1)"));
      CHECK_THAT(output, Contains("resumed from " + kto::test::step_dir(run, step)));
      CHECK(kto::test::read_metrics(run).size() == 150);
      kto::test::check_same_final_weights(straight, run);
    }
  }
}
