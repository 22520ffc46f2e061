// The binaries on bad input, as a user meets it: each is refused at once with a message naming
// the file and the tensor, key or flag, and what would be valid — never a raw LibTorch error, a
// multi-gigabyte allocation or a hang.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <regex>

#include "kto/io/safetensors.h"
#include "kto/util/files.h"
#include "kto/util/sha256.h"
#include "runs.h"
#include "synthetic.h"
#include "test_support.h"

using Catch::Matchers::Contains;

namespace {

std::string ckpt() { return kto::test::bin_dir() + "/kto-ckpt"; }
std::string model_dir() {
  return kto::test::fixtures_dir() + "/hf_models/llama_gqa";
}  // vocab 128, 128 positions

// Runs kto-ckpt forward on an ids file holding `tensors`; returns the exit status, output in *log.
int forward(const kto::test::TempDir& tmp, const kto::io::NamedTensors& tensors, const std::string& flags,
            std::string* log) {
  kto::io::write_safetensors(tmp.file("ids.safetensors"), tensors);
  return kto::test::run_command(ckpt() + " forward --model " + model_dir() + " --ids " +
                                    tmp.file("ids.safetensors") + " --out " + tmp.file("out.safetensors") +
                                    (flags.find("--threads") == std::string::npos ? " --threads 1 " : " ") +
                                    flags,
                                log);
}

}  // namespace

TEST_CASE("kto-ckpt forward refuses bad ids files before computing", "[e2e][bad_input]") {
  kto::test::TempDir tmp;
  std::string log;
  SECTION("more positions than max_position_embeddings (T = 100,000 grew to 9.7 GB)") {
    CHECK(forward(tmp, {{"input_ids", at::ones({1, 100000}, at::kLong)}}, "", &log) != 0);
    CHECK_THAT(log, Contains("ids.safetensors") && Contains("100000 positions") &&
                        Contains("max_position_embeddings (128") && Contains("--allow-long-sequences"));
  }
  SECTION("an empty [0, 6] input_ids") {
    CHECK(forward(tmp, {{"input_ids", at::ones({0, 6}, at::kLong)}}, "", &log) != 0);
    CHECK_THAT(log, Contains("ids.safetensors") && Contains("'input_ids' is empty ([0, 6])"));
  }
  SECTION("mask values other than 0 and 1") {
    for (int64_t bad : {int64_t{2}, int64_t{-1}}) {
      at::Tensor mask = at::ones({1, 4}, at::kLong);
      mask[0][2] = bad;
      INFO("value " << bad);
      CHECK(forward(tmp, {{"input_ids", at::ones({1, 4}, at::kLong)}, {"attention_mask", mask}}, "", &log) !=
            0);
      CHECK_THAT(log, Contains("'attention_mask' holds values in") && Contains("a mask is 0"));
    }
  }
  SECTION("flags out of range") {
    const kto::io::NamedTensors ok{{"input_ids", at::ones({1, 4}, at::kLong)}};
    CHECK(forward(tmp, ok, "--chunk-rows -1", &log) != 0);
    CHECK_THAT(log, Contains("--chunk-rows") && Contains("outside [0, 2^24]"));
    CHECK(forward(tmp, ok, "--threads -3", &log) != 0);
    CHECK_THAT(log, Contains("--threads") && Contains("-3 threads is outside"));
    CHECK(forward(tmp, ok, "--threads 100000", &log) != 0);
    CHECK_THAT(log, Contains("--threads") && Contains("100000 threads is outside"));
    CHECK(forward(tmp, ok, "", &log) == 0);  // the same file is fine
  }
}

TEST_CASE("kto-train refuses a run that cannot fit in memory or in the model's positions",
          "[e2e][bad_input]") {
  kto::test::SyntheticTask task;
  std::string log;
  // ~35B parameters at fp32 with AdamW on one rank: refused with the estimate and the way out.
  const std::string big =
      " --set model.architecture.hidden_size=8192 --set model.architecture.intermediate_size=28672"
      " --set model.architecture.num_hidden_layers=40 --set model.architecture.num_attention_heads=64"
      " --set model.architecture.num_key_value_heads=8";
  CHECK(kto::test::run_command(kto::test::bin_dir() + "/kto-train --config " + task.config + big, &log) != 0);
  CHECK_THAT(log, Contains("this run (1 rank(s) on this host) needs ~") && Contains("of memory") &&
                      Contains("lower data.micro_batch") && Contains("run.check_memory: false"));
  // Sequences longer than the model's positions (the synthetic data holds 13 tokens).
  CHECK(kto::test::run_command(kto::test::bin_dir() + "/kto-train --config " + task.config +
                                   " --set model.architecture.max_position_embeddings=8",
                               &log) != 0);
  CHECK_THAT(log, Contains("key 'data.train'") && Contains("train.h5") && Contains("up to 13 tokens") &&
                      Contains("max_position_embeddings (8)"));
}

namespace {

// Rewrites a checkpoint's manifest with the first match of `pattern` replaced and a valid
// checksum, so that the value checks (not the checksum) are what a test meets.
void rewrite_manifest(const std::string& checkpoint, const std::string& pattern, const std::string& to) {
  const std::string path = checkpoint + "/manifest.yaml";
  std::string text = kto::read_text_file(path);
  text = text.substr(0, text.rfind("manifest_sha256: "));
  REQUIRE(std::regex_search(text, std::regex(pattern)));
  text = std::regex_replace(text, std::regex(pattern), to, std::regex_constants::format_first_only);
  kto::write_text_file(path, text + "manifest_sha256: " + kto::sha256_hex(text.data(), text.size()) + "\n");
}

}  // namespace

TEST_CASE("damaged checkpoint manifests are refused by inspect, export and resume",
          "[e2e][bad_input][ckpt]") {
  kto::test::SyntheticTask task;
  std::string log;
  const std::string train = kto::test::bin_dir() + "/kto-train --config " + task.config;
  REQUIRE(kto::test::run_command(train + " --set train.steps=4 --set ckpt.every=2 --set ckpt.keep=5", &log) ==
          0);
  const std::string step2 = kto::test::step_dir(task.run(), 2), step4 = kto::test::step_dir(task.run(), 4);
  const std::string inspect = kto::test::bin_dir() + "/kto-ckpt inspect --checkpoint ";
  REQUIRE(kto::test::run_command(inspect + step4, &log) == 0);

  SECTION("cut short inside its embedded config: inspect said all shards verify, and it was resumed from") {
    const std::string text = kto::read_text_file(step4 + "/manifest.yaml");
    kto::write_text_file(step4 + "/manifest.yaml", text.substr(0, text.find("config:") + 40));
    CHECK(kto::test::run_command(inspect + step4, &log) != 0);
    CHECK_THAT(log, Contains(step4 + "/manifest.yaml") && Contains("ends before its checksum line"));
    REQUIRE(kto::test::run_command(train + " --set train.steps=6 --set ckpt.every=2 --set ckpt.keep=5",
                                   &log) == 0);
    CHECK_THAT(log, Contains("skipping " + step4) && Contains("resumed from " + step2));
  }
  SECTION("one byte changed anywhere") {
    std::string text = kto::read_text_file(step4 + "/manifest.yaml");
    text[text.find("world_size: 1") + 12] = '2';
    kto::write_text_file(step4 + "/manifest.yaml", text);
    CHECK(kto::test::run_command(inspect + step4, &log) != 0);
    CHECK_THAT(log, Contains("does not match its checksum"));
  }
  SECTION("a negative step, and unit sizes of -1 and 2^62") {
    rewrite_manifest(step4, "\nstep: 4", "\nstep: -5");
    CHECK(kto::test::run_command(inspect + step4, &log) != 0);
    CHECK_THAT(log, Contains("manifest.yaml") && Contains("key 'step': -5 is outside"));
    for (const char* numel : {"-1", "4611686018427387904"}) {
      rewrite_manifest(step2, "name: embed, numel: [-0-9]+", std::string("name: embed, numel: ") + numel);
      INFO(numel);
      CHECK(kto::test::run_command(inspect + step2, &log) != 0);
      CHECK_THAT(log, Contains("manifest.yaml") && Contains("units[0] (embed).numel"));
      CHECK(kto::test::run_command(kto::test::bin_dir() + "/kto-ckpt export --checkpoint " + step2 +
                                       " --out " + task.dir.file("exported"),
                                   &log) != 0);
      CHECK_THAT(log, Contains("units[0] (embed).numel"));
    }
  }
}
