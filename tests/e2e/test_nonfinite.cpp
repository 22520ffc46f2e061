// Non-finite steps, from honest inputs, at 2 ranks. It must be decided before the update, by
// every rank alike: every weight and optimizer moment stays bit-identical (and the optimizer's
// step count too), the step is logged "skipped", training goes on; train.max_nonfinite_steps
// such steps in a row stop every rank in order.
//   - a model whose embedding row for one token id is NaN, and a dataset where only marked
//     examples (chosen by their place in the sampler's stream) hold that token: NaN loss and
//     NaN gradients on every rank;
//   - a corrupted precomputed reference (+inf) for one desirable example under kto_logsigmoid:
//     a non-finite loss on one rank only, with a finite gradient norm (the case an update
//     followed by a check would get wrong).
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <set>
#include <sstream>

#include "kto/ckpt/checkpoint.h"
#include "kto/data/sampler.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/model/dense_model.h"
#include "kto/util/files.h"
#include "runs.h"
#include "synthetic.h"
#include "test_support.h"

using Catch::Matchers::Contains;
using json = nlohmann::json;

namespace {

constexpr int64_t kExamples = 64, kGlobalBatch = 16, kVocab = 64;
constexpr uint64_t kDataSeed = 0;  // data.seed

// A scratch run: train.h5 with `poisoned` examples marked, model/ with embedding row kVocab NaN.
struct PoisonedTask {
  kto::test::TempDir dir;
  std::string config;
  explicit PoisonedTask(const std::vector<int64_t>& poisoned) {
    kto::test::SyntheticSpec spec;
    spec.examples = kExamples;
    spec.vocab = kVocab;
    spec.rare_token_examples = poisoned;
    REQUIRE(kto::test::write_synthetic_dataset(dir.file("train.h5"), spec) == kExamples);
    kto::model::ModelConfig c;
    c.vocab_size = kVocab + 1;
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.max_position_embeddings = 64;
    c.resolve_defaults();
    c.validate("test");
    kto::model::DenseModel model(c, at::kFloat);
    model.init_random(7, 0.02);
    model.param("model.embed_tokens.weight")[kVocab].fill_(std::nan(""));
    kto::io::save_hf_model(dir.file("model"), c, model.layout(), model.units(), at::kFloat);
    config = dir.file("config.yaml");
    kto::write_text_file(config, "model: {path: " + dir.file("model") + "}\n" + "data: {train: [" +
                                     dir.file("train.h5") +
                                     "], micro_batch: 8, global_batch: 16}\n"
                                     "optim: {lr: 0.005}\n"
                                     "train: {log_every: 1, export_final: false, peak_gflops: 1}\n"
                                     "ckpt: {every: 1, keep: 100}\n"
                                     "run: {dir: " +
                                     dir.file("run") + ", threads: 1}\n");
  }
  std::string run() const { return dir.file("run"); }
  int train(int steps, const std::vector<std::string>& sets, std::string* log) const {
    std::string cmd = std::string(KTO_MPIEXEC) + " -np 2 --oversubscribe " + kto::test::bin_dir() +
                      "/kto-train --config " + config + " --set train.steps=" + std::to_string(steps);
    for (const std::string& s : sets) cmd += " --set " + s;
    return kto::test::run_command(cmd, log);
  }
};

// The example at stream position `p` (epochs of kExamples, one seeded permutation each).
int64_t example_at(int64_t p) {
  return kto::data::BatchSampler::permutation(kExamples, kDataSeed,
                                              p / kExamples)[static_cast<size_t>(p % kExamples)];
}

// Steps (from 1) among the first `steps` whose global batch holds one of `poisoned`.
std::set<int64_t> steps_holding(const std::vector<int64_t>& poisoned, int64_t steps) {
  std::set<int64_t> out;
  for (int64_t s = 1; s <= steps; ++s) {
    for (int64_t p = (s - 1) * kGlobalBatch; p < s * kGlobalBatch; ++p) {
      if (std::find(poisoned.begin(), poisoned.end(), example_at(p)) != poisoned.end()) out.insert(s);
    }
  }
  return out;
}

bool same_bits(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].numel() != b[i].numel() ||
        std::memcmp(a[i].data_ptr(), b[i].data_ptr(),
                    static_cast<size_t>(a[i].numel() * a[i].element_size())) != 0)
      return false;
  }
  return true;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("a non-finite step changes no weight and no optimizer moment on any rank, and training goes on",
          "[e2e][train][mpi]") {
  const std::vector<int64_t> poisoned{example_at(2 * kGlobalBatch)};  // in step 3
  const int64_t steps = 6;
  const std::set<int64_t> bad = steps_holding(poisoned, steps);
  REQUIRE(bad.count(3) == 1);
  REQUIRE_FALSE(bad.count(4));  // a healthy step right after: training goes on
  PoisonedTask task(poisoned);
  std::string log;
  const int rc = task.train(steps, {}, &log);
  INFO(log);
  REQUIRE(rc == 0);
  const std::vector<json> records = kto::test::read_metrics(task.run(), "train");
  REQUIRE(records.size() == static_cast<size_t>(steps));
  int64_t updates = 0;
  for (int64_t s = 1; s <= steps; ++s) {
    const json& m = records[static_cast<size_t>(s - 1)];
    INFO("step " << s);
    CHECK(m["skipped"].get<double>() == (bad.count(s) ? 1.0 : 0.0));
    if (!bad.count(s)) {
      ++updates;
      CHECK(std::isfinite(m["loss"].get<double>()));
    }
    // What the checkpoint after the step holds, against the one before it.
    const std::string after = kto::test::step_dir(task.run(), static_cast<int>(s));
    CHECK(kto::ckpt::read_manifest(after).optimizer_steps == updates);
    if (s == 1) continue;
    const bool unchanged =
        same_bits(kto::test::saved_tensors(kto::test::step_dir(task.run(), static_cast<int>(s - 1))),
                  kto::test::saved_tensors(after));
    CHECK(unchanged == (bad.count(s) == 1));  // skipped: bit-identical; trained: changed
  }
  CHECK(count(log, "non-finite loss or gradient norm; the update was skipped") == bad.size());
}

TEST_CASE("train.max_nonfinite_steps non-finite steps in a row stop every rank in order",
          "[e2e][train][mpi]") {
  const std::vector<int64_t> poisoned{example_at(kGlobalBatch), example_at(2 * kGlobalBatch)};  // steps 2, 3
  REQUIRE(steps_holding(poisoned, 3) == std::set<int64_t>{2, 3});
  PoisonedTask task(poisoned);
  std::string log;
  const int rc = task.train(6, {"train.max_nonfinite_steps=2"}, &log);
  INFO(log);
  CHECK(rc == 1);
  // Every rank reached the decision and said so; no rank was aborted.
  CHECK(count(log, "stopping: 2 consecutive steps with a non-finite loss or gradient norm") == 2);
  CHECK_THAT(log, Contains("r0@") && Contains("r1@") && Contains("weights, which are those after step 1"));
  CHECK(count(log, "MPI_ABORT") == 0);
  CHECK(count(log, "[abort") == 0);
  const std::vector<json> records = kto::test::read_metrics(task.run(), "train");
  REQUIRE(records.size() == 3);
  CHECK(records[0]["skipped"].get<double>() == 0.0);
  CHECK(records[1]["skipped"].get<double>() == 1.0);
  CHECK(records[2]["skipped"].get<double>() == 1.0);
  CHECK_THAT(kto::read_text_file(task.run() + "/status.json"), Contains("\"state\": \"failed\""));
  CHECK_FALSE(kto::path_exists(kto::test::step_dir(task.run(), 3)));  // the failing step is not saved
  CHECK(same_bits(kto::test::saved_tensors(kto::test::step_dir(task.run(), 1)),
                  kto::test::saved_tensors(kto::test::step_dir(task.run(), 2))));
}

TEST_CASE("a non-finite loss with a finite gradient on one rank is skipped by every rank",
          "[e2e][train][mpi]") {
  // A corrupted precomputed reference (+inf) for one desirable example: kto_logsigmoid's loss
  // of that example is +inf while its gradient, and so the gradient norm, stays finite. Only
  // the rank that holds it sees a non-finite loss; the decision must still be every rank's.
  int64_t position = 2 * kGlobalBatch;               // step 3
  while (example_at(position) % 2 != 0) ++position;  // even examples are the desirable ones
  REQUIRE(position < 3 * kGlobalBatch);
  const std::vector<int64_t> poisoned{example_at(position)};
  const int64_t steps = 5;
  const std::set<int64_t> bad = steps_holding(poisoned, steps);
  REQUIRE(bad.count(3) == 1);
  REQUIRE_FALSE(bad.count(4));
  kto::test::SyntheticSpec spec;
  spec.examples = kExamples;
  spec.reference_logps = true;
  spec.infinite_reference_examples = poisoned;
  kto::test::SyntheticTask task(spec);
  std::string log;
  const int rc = kto::test::run_command(
      std::string(KTO_MPIEXEC) + " -np 2 --oversubscribe " + kto::test::bin_dir() + "/kto-train --config " +
          task.config + " --set loss.name=kto_logsigmoid --set data.pairing=fixed --set train.steps=" +
          std::to_string(steps) + " --set ckpt.every=1 --set ckpt.keep=100 --set train.peak_gflops=1",
      &log);
  INFO(log);
  REQUIRE(rc == 0);
  const std::vector<json> records = kto::test::read_metrics(task.run(), "train");
  REQUIRE(records.size() == static_cast<size_t>(steps));
  for (int64_t s = 1; s <= steps; ++s) {
    const json& m = records[static_cast<size_t>(s - 1)];
    INFO("step " << s << ": " << m.dump());
    CHECK(m["skipped"].get<double>() == (bad.count(s) ? 1.0 : 0.0));
    CHECK(m["grad_norm"].is_number());  // finite: the norm alone would not have stopped the update
    if (bad.count(s)) CHECK(m["loss"] == "inf");
    if (s == 1) continue;
    const bool unchanged =
        same_bits(kto::test::saved_tensors(kto::test::step_dir(task.run(), static_cast<int>(s - 1))),
                  kto::test::saved_tensors(kto::test::step_dir(task.run(), static_cast<int>(s))));
    CHECK(unchanged == (bad.count(s) == 1));
  }
}
