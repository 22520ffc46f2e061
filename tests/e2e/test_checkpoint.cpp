// Checkpoints as a preempted user meets them: exact resume at 1, 2 and 4 ranks; resharding
// 4 -> 2 -> 1 with bit-identical weights and optimizer state and no example skipped or
// repeated; export that kto-ckpt forward and the HF loader accept; and faults — a rank killed
// mid-write, a flipped byte, a full disk.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kto/ckpt/checkpoint.h"
#include "kto/data/dataset.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/io/safetensors.h"
#include "kto/util/files.h"
#include "runs.h"
#include "synthetic.h"
#include "test_support.h"

using json = nlohmann::json;
using Catch::Matchers::Contains;

namespace {

kto::test::SyntheticSpec z0_spec() {
  kto::test::SyntheticSpec spec;
  spec.keep_undesirable = 0.35;  // z0 > 0: resume must restore everything z0 depends on
  return spec;
}

struct Run : kto::test::SyntheticTask {
  Run() : SyntheticTask(z0_spec()) {}
  int train(const std::string& run_dir, int ranks, const std::vector<std::string>& sets, std::string* log,
            const std::string& prefix = "") const {
    std::string cmd = prefix;
    if (ranks > 1) cmd += std::string(KTO_MPIEXEC) + " -np " + std::to_string(ranks) + " --oversubscribe ";
    cmd += kto::test::bin_dir() + "/kto-train --config " + config + " --set run.dir=" + run_dir +
           " --set data.micro_batch=" + std::to_string(16 / ranks);
    for (const std::string& s : sets) cmd += " --set " + s;
    return kto::test::run_command(cmd, log);
  }
};

using kto::test::saved_tensors;

}  // namespace

TEST_CASE("resume is exact: 10 + 10 steps equal 20 straight, at 1, 2 and 4 ranks", "[e2e][ckpt]") {
  Run run;
  for (int ranks : {1, 2, 4}) {
    DYNAMIC_SECTION(ranks << " ranks") {
      const std::string straight = run.dir.file("straight" + std::to_string(ranks));
      const std::string resumed = run.dir.file("resumed" + std::to_string(ranks));
      std::string log;
      REQUIRE(run.train(straight, ranks, {"train.steps=20", "train.export_final=true"}, &log) == 0);
      REQUIRE(run.train(resumed, ranks, {"train.steps=10"}, &log) == 0);
      CHECK(kto::path_exists(kto::test::step_dir(resumed, 10) + "/manifest.yaml"));
      REQUIRE(run.train(resumed, ranks, {"train.steps=20", "train.export_final=true"}, &log) == 0);
      INFO(log);
      CHECK_THAT(log, Contains("resumed from") && Contains("step_00000010"));
      const auto a = kto::test::read_metrics(straight), b = kto::test::read_metrics(resumed);
      REQUIRE(a.size() == 20);
      REQUIRE(b.size() == 20);  // the first run's 10 records, then the resumed 10
      for (size_t i = 0; i < 20; ++i) {
        for (const std::string key :
             {"loss", "kl", "grad_norm", "rewards/desirable", "rewards/undesirable", "lr"}) {
          INFO("step " << i + 1 << " " << key);
          CHECK(a[i][key].get<double>() == b[i][key].get<double>());
        }
      }
      kto::test::check_same_final_weights(straight, resumed);
    }
  }
}

TEST_CASE("a 4-rank checkpoint resumes at 2 and 1 ranks with identical state and data position",
          "[e2e][ckpt]") {
  Run run;
  std::string log;
  const std::string four = run.dir.file("four");
  REQUIRE(run.train(four, 4, {"train.steps=10", "ckpt.keep=5"}, &log) == 0);
  const auto saved = saved_tensors(kto::test::step_dir(four, 10));
  const auto saved_manifest = kto::ckpt::read_manifest(kto::test::step_dir(four, 10));
  for (int ranks : {2, 1}) {
    const std::string dir = run.dir.file("at" + std::to_string(ranks));
    // Load at the new world size and save again at the same step (no training in between).
    const int rc =
        run.train(dir, ranks, {"train.steps=10", "ckpt.resume=" + kto::test::step_dir(four, 10)}, &log);
    INFO(log);
    REQUIRE(rc == 0);
    const auto resaved = saved_tensors(kto::test::step_dir(dir, 10));
    REQUIRE(resaved.size() == saved.size());
    for (size_t i = 0; i < saved.size(); ++i) CHECK(at::equal(resaved[i], saved[i]));
    const auto m = kto::ckpt::read_manifest(kto::test::step_dir(dir, 10));
    CHECK(m.world_size == ranks);
    CHECK(m.sampler == saved_manifest.sampler);
    CHECK(m.optimizer_steps == saved_manifest.optimizer_steps);
    // Training on continues with the next examples of the global order: 16 per step.
    REQUIRE(run.train(dir, ranks, {"train.steps=13"}, &log) == 0);
    const auto after = kto::ckpt::read_manifest(kto::test::step_dir(dir, 13));
    const auto metrics = kto::test::read_metrics(dir);
    REQUIRE(metrics.size() == 3);  // this run's own steps 11-13
    for (const json& m : metrics) {
      CHECK(m["count/desirable"].get<double>() + m["count/undesirable"].get<double>() == 16.0);
    }
    // Exactly 3 x 16 positions further in the global order (wrapping into the next epoch).
    const int64_t n = kto::data::Dataset::open({run.dir.file("train.h5")})->size();
    const int64_t expected = saved_manifest.sampler.epoch * n + saved_manifest.sampler.position + 3 * 16;
    CHECK(after.sampler.epoch * n + after.sampler.position == expected);
  }
}

TEST_CASE("export of a checkpoint loads in the HF loader and reproduces the trained model's logits",
          "[e2e][ckpt]") {
  Run run;
  std::string log;
  const std::string dir = run.dir.file("r");
  REQUIRE(run.train(dir, 2, {"train.steps=6", "train.export_final=true"}, &log) == 0);
  const std::string exported = run.dir.file("exported");
  const std::string tok = kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b";
  REQUIRE(kto::test::run_command(kto::test::bin_dir() + "/kto-ckpt export --checkpoint " +
                                     kto::test::step_dir(dir, 6) + " --out " + exported +
                                     " --dtype fp32 --max-shard-size 0 --tokenizer " + tok,
                                 &log) == 0);
  INFO(log);
  CHECK(kto::path_exists(exported + "/model.safetensors.index.json"));  // sharded: --max-shard-size 0
  CHECK(kto::path_exists(exported + "/tokenizer.json"));
  CHECK(kto::path_exists(exported + "/config.json"));
  const auto model = kto::io::load_hf_model(exported, at::kFloat);  // the HF reference test's loader
  CHECK(model.config().num_parameters() > 0);
  // Logits of the export and of the trainer's own final model agree exactly.
  kto::io::write_safetensors(run.dir.file("ids.safetensors"),
                             {{"input_ids", at::arange(20, at::kLong).remainder(60).add(2).view({2, 10})}});
  for (const std::string& m : {exported, dir + "/final"}) {
    REQUIRE(kto::test::run_command(kto::test::bin_dir() + "/kto-ckpt forward --model " + m + " --ids " +
                                       run.dir.file("ids.safetensors") + " --out " + m +
                                       "/logits.safetensors",
                                   &log) == 0);
  }
  const auto a = kto::io::SafetensorsSet::open_file(exported + "/logits.safetensors");
  const auto b = kto::io::SafetensorsSet::open_file(dir + "/final/logits.safetensors");
  CHECK(at::equal(a.read("logits"), b.read("logits")));
  CHECK(kto::test::run_command(
            kto::test::bin_dir() + "/kto-ckpt inspect --checkpoint " + kto::test::step_dir(dir, 6), &log) ==
        0);
  CHECK_THAT(log, Contains("world size 2") && Contains("all shards verify"));
}

TEST_CASE("faults: killed mid-write, flipped byte, full disk — the previous checkpoint survives",
          "[e2e][ckpt]") {
  Run run;
  const std::string dir = run.dir.file("r");
  std::string log;
  SECTION("a process killed while writing leaves the previous checkpoint, and resume picks it") {
    const int rc =
        run.train(dir, 1, {"train.steps=10", "ckpt.every=5"}, &log, "KTO_FAULT_KILL_IN_CHECKPOINT=10 ");
    CHECK(rc != 0);  // killed by SIGKILL
    CHECK(kto::path_exists(kto::test::step_dir(dir, 10) + ".tmp"));
    CHECK_FALSE(kto::path_exists(kto::test::step_dir(dir, 10)));
    REQUIRE(run.train(dir, 1, {"train.steps=10", "ckpt.every=5"}, &log) == 0);
    INFO(log);
    CHECK_THAT(log,
               Contains("unfinished checkpoint") && Contains("resumed from") && Contains("step_00000005"));
    CHECK(kto::path_exists(kto::test::step_dir(dir, 10) + "/manifest.yaml"));
    CHECK_FALSE(kto::path_exists(kto::test::step_dir(dir, 10) + ".tmp"));
  }
  SECTION("a flipped byte is detected by checksum and the previous checkpoint is used") {
    REQUIRE(run.train(dir, 1, {"train.steps=10", "ckpt.every=5"}, &log) == 0);
    const std::string shard = kto::test::step_dir(dir, 10) + "/shard_00000-of-00001.h5";
    std::string bytes = kto::test::read_bytes(shard);
    bytes[bytes.size() / 2] ^= 0x10;
    kto::test::write_bytes(shard, bytes);
    CHECK(kto::test::run_command(
              kto::test::bin_dir() + "/kto-ckpt inspect --checkpoint " + kto::test::step_dir(dir, 10),
              &log) == 1);
    CHECK_THAT(log, Contains("checksum mismatch"));
    REQUIRE(run.train(dir, 1, {"train.steps=12", "ckpt.every=5"}, &log) == 0);
    INFO(log);
    CHECK_THAT(log, Contains("skipping") && Contains("checksum mismatch") && Contains("resumed from") &&
                        Contains("step_00000005"));
  }
  SECTION("a full disk fails the save with a clear error and keeps the previous checkpoint") {
    REQUIRE(run.train(dir, 1, {"train.steps=5"}, &log) == 0);
    // RLIMIT_FSIZE stands in for a full disk: writes past 64 KiB fail (EFBIG), SIGXFSZ ignored;
    // PMIx keeps its data in memory instead of in (larger) shared-memory files.
    const int rc =
        run.train(dir, 1, {"train.steps=10"}, &log, "trap '' XFSZ; ulimit -f 64; PMIX_MCA_gds=hash ");
    INFO(log);
    CHECK(rc == 1);
    CHECK_THAT(
        log, Contains("checkpoint") && Contains("failed") && Contains("previous checkpoints are untouched"));
    CHECK(kto::test::run_command(
              kto::test::bin_dir() + "/kto-ckpt inspect --checkpoint " + kto::test::step_dir(dir, 5), &log) ==
          0);
    REQUIRE(run.train(dir, 1, {"train.steps=10"}, &log) == 0);  // with space again, it resumes from step 5
    CHECK_THAT(log, Contains("step_00000005"));
  }
}
