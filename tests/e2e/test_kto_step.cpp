// Whole training steps against an independent computation (tests/fixtures/kto_step): kto-train
// on each case's model and data, at 1 and 2 ranks, reproduces the case's per-step loss, kl,
// grad_norm and rewards per class to 1e-9 relative, and its final fp32 weights to 1e-4 of each
// tensor's change over the run. The cases were computed with Hugging Face transformers, plain
// PyTorch autograd and AdamW from its definition, so this guards the model, the backward, the
// KL pass and z0, clipping, class weights and the optimizer together, through every rewrite.
//
// Data-driven: KTO_STEP_CASES=DIR names a directory of cases (or one case directory); a case is
// a directory holding case.json, model/, train.h5 and expected.safetensors.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kto/io/safetensors.h"
#include "kto/util/files.h"
#include "runs.h"
#include "test_support.h"

using json = nlohmann::json;

namespace {

std::vector<std::string> case_dirs() {
  const std::string root = kto::test::env_or("KTO_STEP_CASES", kto::test::fixtures_dir() + "/kto_step");
  if (kto::path_exists(root + "/case.json")) return {root};
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    if (entry.is_directory() && kto::path_exists(entry.path().string() + "/case.json"))
      out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The case's settings as a kto-train config. Settings this mapping does not know fail the
// test by name rather than being ignored.
std::string config_for(const std::string& case_dir, const json& s, int ranks, const std::string& run_dir) {
  static const std::vector<std::string> known = {
      "steps",        "beta",      "desirable_weight", "undesirable_weight", "lr",       "beta1",
      "beta2",        "eps",       "max_grad_norm",    "weight_decay",       "schedule", "compute",
      "global_batch", "estimator", "pair_scope"};
  for (auto it = s.begin(); it != s.end(); ++it) {
    INFO("case.json setting '" << it.key() << "'");
    REQUIRE(std::find(known.begin(), known.end(), it.key()) != known.end());
  }
  const std::string schedule = s.value("schedule", "constant, no warmup");
  REQUIRE(schedule == "constant, no warmup");
  const std::string compute = s.value("compute", "fp32");
  const std::string dtype = compute.substr(0, 4);
  REQUIRE((dtype == "fp64" || dtype == "fp32" || dtype == "bf16"));
  const int64_t global = s.at("global_batch").get<int64_t>();
  REQUIRE(global % ranks == 0);
  std::ostringstream y;
  y.precision(17);
  y << "model: {path: " << case_dir << "/model, dtype: " << dtype << "}\n"
    << "data: {train: [" << case_dir << "/train.h5], micro_batch: " << global / ranks
    << ", global_batch: " << global << ", pair_scope: " << s.value("pair_scope", "global") << "}\n"
    << "loss: {name: kto, beta: " << s.at("beta").get<double>()
    << ", desirable_weight: " << s.at("desirable_weight").get<double>()
    << ", undesirable_weight: " << s.at("undesirable_weight").get<double>()
    << ", estimator: " << s.value("estimator", "pooled") << "}\n"
    << "optim: {name: adamw, lr: " << s.at("lr").get<double>() << ", beta1: " << s.at("beta1").get<double>()
    << ", beta2: " << s.at("beta2").get<double>() << ", eps: " << s.at("eps").get<double>()
    << ", weight_decay: " << s.value("weight_decay", 0.0)
    << ", max_grad_norm: " << s.at("max_grad_norm").get<double>() << "}\n"
    << "schedule: {warmup_steps: 0, decay: constant}\n"
    << "train: {steps: " << s.at("steps").get<int64_t>()
    << ", export_final: true, export_tokenizer: none, peak_gflops: 1}\n"
    << "ckpt: {resume: never}\n"
    << "run: {dir: " << run_dir << ", threads: 1}\n";
  return y.str();
}

}  // namespace

TEST_CASE("kto-train reproduces independently computed KTO steps at 1 and 2 ranks", "[e2e][train][golden]") {
  const std::vector<std::string> cases = case_dirs();
  REQUIRE_FALSE(cases.empty());
  for (const std::string& case_dir : cases) {
    const json c = json::parse(kto::read_text_file(case_dir + "/case.json"));
    const json& expected_steps = c.at("steps");
    const kto::io::SafetensorsSet initial = kto::io::SafetensorsSet::open_dir(case_dir + "/model");
    const kto::io::SafetensorsSet expected =
        kto::io::SafetensorsSet::open_file(case_dir + "/expected.safetensors");
    for (int ranks : {1, 2}) {
      kto::test::TempDir dir;
      const std::string config = dir.file("config.yaml");
      kto::test::write_bytes(config, config_for(case_dir, c.at("settings"), ranks, dir.file("run")));
      const std::string cmd =
          (ranks > 1 ? std::string(KTO_MPIEXEC) + " -np " + std::to_string(ranks) + " --oversubscribe "
                     : "") +
          kto::test::bin_dir() + "/kto-train --config " + config;
      std::string log;
      const int rc = kto::test::run_command(cmd, &log);
      INFO(case_dir << " at " << ranks << " rank(s)\n" << log);
      REQUIRE(rc == 0);

      const std::vector<json> steps = kto::test::read_metrics(dir.file("run"), "train");
      REQUIRE(steps.size() == expected_steps.size());
      for (size_t i = 0; i < steps.size(); ++i) {
        for (const std::string key :
             {"loss", "kl", "grad_norm", "rewards/desirable", "rewards/undesirable"}) {
          const double want = expected_steps[i].at(key).get<double>();
          REQUIRE(steps[i].contains(key));
          const double got = steps[i][key].get<double>();
          INFO("step " << i + 1 << " " << key << ": kto " << std::setprecision(17) << got << ", reference "
                       << want);
          CHECK(std::abs(got - want) <= 1e-9 * std::abs(want) + 1e-12);
        }
      }

      const kto::io::SafetensorsSet final_weights = kto::io::SafetensorsSet::open_dir(dir.file("run/final"));
      REQUIRE(final_weights.names().size() == expected.names().size());
      for (const std::string& name : expected.names()) {
        const at::Tensor want = expected.read(name).to(at::kDouble);
        const at::Tensor got = final_weights.read(name).to(at::kDouble);
        const double change = (want - initial.read(name).to(at::kDouble)).abs().max().item<double>();
        const double err = (got - want).abs().max().item<double>();
        INFO(name << ": max |kto - reference| " << err << ", max change over the run " << change);
        CHECK(err <= 1e-4 * change);
      }
    }
  }
}
