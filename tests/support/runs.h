// Helpers for tests that inspect kto-train run directories: the metrics log, checkpoint paths
// and a bit-exact comparison of two runs' exported weights.
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "synthetic.h"
#include "test_support.h"

namespace kto::test {

// A scratch directory with a synthetic training set (train.h5; with_eval, also a balanced
// held-out eval.h5 of eval_examples from another seed) and a kto-train config for it
// (config.yaml, synthetic_config plus extra_yaml); the run directory is run().
struct SyntheticTask {
  TempDir dir;
  std::string config;
  explicit SyntheticTask(const SyntheticSpec& spec = {}, bool with_eval = false,
                         const std::string& extra_yaml = "", int64_t eval_examples = 128);
  std::string run() const { return dir.file("run"); }
};

// tests/multinode/two_nodes.sh's two network-namespace nodes in dir, removed when this goes; the
// test is skipped (exit 77) where they cannot be made.
class TwoNodes {
 public:
  explicit TwoNodes(std::string dir);
  ~TwoNodes();
  TwoNodes(const TwoNodes&) = delete;
  TwoNodes& operator=(const TwoNodes&) = delete;
  const std::string& dir() const { return dir_; }
  // The shell prefix that runs a command on node "a" or "b".
  std::string on(const std::string& node) const;
  // `command` on the first node, mpirun reaching the second through the nodes' rsh agent.
  std::string on_first_node(const std::string& command) const;

 private:
  std::string dir_;
};

// " --config CONFIG --set run.dir=RUN_DIR --set A --set B ...": kto-train's arguments for task.
std::string train_args(const SyntheticTask& task, const std::string& run_dir,
                       const std::vector<std::string>& sets);

// Starts `command` (one simple command: kto-train or a launcher) in the background, waits until
// run_dir/metrics.jsonl holds at least `after_records` lines, then runs the shell snippet
// `signal` (in which $PID is the command's pid) and waits for the command to end. Returns the
// command's exit status; its output goes to *log.
int run_and_signal(const std::string& command, const std::string& run_dir, int after_records,
                   const std::string& signal, std::string* log);

// The records of run_dir/metrics.jsonl whose "split" is `split` ("train" or "eval"), in order.
std::vector<nlohmann::json> read_metrics(const std::string& run_dir, const std::string& split = "train");

// run_dir/checkpoints/step_XXXXXXXX.
std::string step_dir(const std::string& run_dir, int step);

// Every unit's parameters and AdamW moments (param, state0, state1) as saved in a checkpoint.
std::vector<at::Tensor> saved_tensors(const std::string& checkpoint);

// Catch2 checks that a/final and b/final hold the same tensors, bit for bit.
void check_same_final_weights(const std::string& run_a, const std::string& run_b);

}  // namespace kto::test
