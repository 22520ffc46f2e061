#include "runs.h"

#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>

#include "kto/ckpt/checkpoint.h"
#include "kto/io/safetensors.h"
#include "kto/util/files.h"

namespace kto::test {

std::vector<at::Tensor> saved_tensors(const std::string& checkpoint) {
  ckpt::Reader reader(checkpoint);
  std::vector<at::Tensor> out;
  for (size_t u = 0; u < reader.manifest().units.size(); ++u) {
    for (std::string what : {"param", "state0", "state1"}) {
      at::Tensor t = at::empty({reader.manifest().units[u].numel});
      reader.read(u, what, 0, t);
      out.push_back(t);
    }
  }
  return out;
}

SyntheticTask::SyntheticTask(const SyntheticSpec& spec, bool with_eval, const std::string& extra_yaml,
                             int64_t eval_examples) {
  write_synthetic_dataset(dir.file("train.h5"), spec);
  if (with_eval) {
    SyntheticSpec eval_spec = spec;
    eval_spec.seed = spec.seed + 1000;
    eval_spec.examples = eval_examples;
    eval_spec.keep_desirable = eval_spec.keep_undesirable = 1.0;  // a balanced held-out set
    write_synthetic_dataset(dir.file("eval.h5"), eval_spec);
  }
  config = dir.file("config.yaml");
  write_text_file(
      config, synthetic_config(dir.file("train.h5"), with_eval ? dir.file("eval.h5") : "", dir.file("run")) +
                  extra_yaml);
}

std::string train_args(const SyntheticTask& task, const std::string& run_dir,
                       const std::vector<std::string>& sets) {
  std::string args = " --config " + task.config + " --set run.dir=" + run_dir;
  for (const std::string& s : sets) args += " --set " + s;
  return args;
}

int run_and_signal(const std::string& command, const std::string& run_dir, int after_records,
                   const std::string& signal, std::string* log) {
  TempDir scratch;
  const std::string script = scratch.file("run.sh"), output = scratch.file("output.log");
  write_text_file(script, "exec > " + output + " 2>&1\n" + command + " &\nPID=$!\n" +
                              "while kill -0 $PID 2>/dev/null; do\n"
                              "  [ \"$(cat " +
                              run_dir + "/metrics.jsonl 2>/dev/null | wc -l)\" -ge " +
                              std::to_string(after_records) +
                              " ] && break\n"
                              "  sleep 0.02\n"
                              "done\n" +
                              signal + "\nwait $PID\n");
  const int status = run_command("bash " + script);
  if (log != nullptr) *log = path_exists(output) ? read_text_file(output) : std::string();
  return status;
}

std::vector<nlohmann::json> read_metrics(const std::string& run_dir, const std::string& split) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.value("split", "") == split) out.push_back(std::move(j));
  }
  return out;
}

std::string step_dir(const std::string& run_dir, int step) {
  char name[32];
  std::snprintf(name, sizeof(name), "/checkpoints/step_%08d", step);
  return run_dir + name;
}

void check_same_final_weights(const std::string& run_a, const std::string& run_b) {
  const auto a = kto::io::SafetensorsSet::open_dir(run_a + "/final");
  const auto b = kto::io::SafetensorsSet::open_dir(run_b + "/final");
  REQUIRE(a.names() == b.names());
  REQUIRE_FALSE(a.names().empty());
  for (const std::string& name : a.names()) {
    INFO(name);
    CHECK(at::equal(a.read(name), b.read(name)));  // bit-identical
  }
}

namespace {
std::string two_nodes_script() { return fixtures_dir() + "/../multinode/two_nodes.sh"; }
}  // namespace

TwoNodes::TwoNodes(std::string dir) : dir_(std::move(dir)) {
  std::string log;
  const int rc = run_command(two_nodes_script() + " up " + dir_, &log);
  if (rc == 77) skip_test("two nodes cannot be made here: " + log);
  if (rc != 0) throw std::runtime_error("tests/multinode/two_nodes.sh up failed: " + log);
}

TwoNodes::~TwoNodes() { run_command(two_nodes_script() + " down " + dir_); }

std::string TwoNodes::on(const std::string& node) const {
  return two_nodes_script() + " on " + dir_ + " " + node + " ";
}

std::string TwoNodes::on_first_node(const std::string& command) const {
  return two_nodes_script() + " run " + dir_ + " " + command;
}

}  // namespace kto::test
