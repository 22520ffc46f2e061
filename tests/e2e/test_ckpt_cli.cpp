// End-to-end runs of the kto-ckpt binary: forward against the Hugging Face reference cases
// (data-driven, KTO_HF_CASES overrides the directory), init from a YAML config, and the errors
// a user sees for bad input.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "kto/io/hf_checkpoint.h"
#include "kto/io/safetensors.h"
#include "kto/util/files.h"
#include "test_support.h"

using Catch::Matchers::Contains;

namespace {

std::string ckpt() { return kto::test::bin_dir() + "/kto-ckpt"; }

std::string source_dir() { return kto::test::fixtures_dir() + "/../.."; }

}  // namespace

TEST_CASE("kto-ckpt forward reproduces Hugging Face on every reference case", "[e2e][hf_reference]") {
  const std::string dir = kto::test::env_or("KTO_HF_CASES", kto::test::fixtures_dir() + "/hf_models");
  const nlohmann::json index = nlohmann::json::parse(kto::read_text_file(dir + "/index.json"));
  kto::test::TempDir tmp;
  for (auto it = index["cases"].begin(); it != index["cases"].end(); ++it) {
    const std::string case_dir = dir + "/" + it.value()["dir"].get<std::string>();
    const std::string ref_path = case_dir + "/reference.safetensors";
    const auto ref = kto::io::SafetensorsSet::open_file(ref_path);
    for (const auto& [dtype, suffix, tol] :
         {std::tuple<std::string, std::string, double>{"fp32", "f32", 1e-4}, {"fp64", "f64_strict", 1e-9}}) {
      DYNAMIC_SECTION(it.key() << " " << dtype) {
        const std::string out = tmp.file(it.key() + "." + dtype + ".safetensors");
        std::string log;
        const int rc = kto::test::run_command(ckpt() + " forward --model " + case_dir + " --ids " + ref_path +
                                                  " --out " + out + " --dtype " + dtype + " --threads 1",
                                              &log);
        INFO(log);
        REQUIRE(rc == 0);
        const auto got = kto::io::SafetensorsSet::open_file(out);
        // The tool masks padded keys as HF does, so every position compares, padding included.
        for (const std::string name : {"logits", "token_logprobs", "completion_logprob_sum"}) {
          const double err = (got.read(name).to(at::kDouble) - ref.read(name + "_" + suffix).to(at::kDouble))
                                 .abs()
                                 .max()
                                 .item<double>();
          INFO(name << " max abs error " << err);
          CHECK(err <= tol);
        }
      }
    }
  }
}

TEST_CASE("kto-ckpt init writes a model that forward runs and that reloads exactly", "[e2e]") {
  kto::test::TempDir tmp;
  const std::string config = source_dir() + "/configs/tiny.yaml";
  std::string log;
  REQUIRE(kto::test::run_command(
              ckpt() + " init --config " + config + " --out " + tmp.file("m") + " --set model.init_seed=3",
              &log) == 0);
  const auto a = kto::io::load_hf_model(tmp.file("m"), at::kFloat);
  REQUIRE(kto::test::run_command(
              ckpt() + " init --config " + config + " --out " + tmp.file("m2") + " --set model.init_seed=3",
              &log) == 0);
  const auto b = kto::io::load_hf_model(tmp.file("m2"), at::kFloat);
  for (size_t u = 0; u < a.units().size(); ++u) CHECK(at::equal(a.units()[u], b.units()[u]));

  const at::Tensor ids = at::arange(12, at::kLong).remainder(a.config().vocab_size).view({2, 6});
  kto::io::write_safetensors(tmp.file("ids.safetensors"), {{"input_ids", ids}});
  REQUIRE(kto::test::run_command(ckpt() + " forward --model " + tmp.file("m") + " --ids " +
                                     tmp.file("ids.safetensors") + " --out " + tmp.file("out.safetensors") +
                                     " --dtype bf16",
                                 &log) == 0);
  const auto out = kto::io::SafetensorsSet::open_file(tmp.file("out.safetensors"));
  CHECK(out.info("logits").shape == std::vector<int64_t>{2, 6, a.config().vocab_size});
  CHECK(out.info("token_logprobs").dtype == kto::io::DType::F32);
  CHECK(out.find("completion_logprob_sum") == nullptr);
}

TEST_CASE("kto-ckpt reports bad input clearly and exits non-zero", "[e2e]") {
  kto::test::TempDir tmp;
  const std::string model = kto::test::fixtures_dir() + "/hf_models/llama_gqa";
  std::string log;
  kto::io::write_safetensors(tmp.file("big.safetensors"), {{"input_ids", at::full({1, 3}, 500, at::kLong)}});
  CHECK(kto::test::run_command(ckpt() + " forward --model " + model + " --ids " +
                                   tmp.file("big.safetensors") + " --out " + tmp.file("o.safetensors"),
                               &log) == 1);
  CHECK_THAT(log, Contains("big.safetensors") && Contains("outside the vocabulary"));
  CHECK_FALSE(kto::path_exists(tmp.file("o.safetensors")));

  kto::io::write_safetensors(tmp.file("noids.safetensors"), {{"tokens", at::zeros({1, 3}, at::kLong)}});
  CHECK(kto::test::run_command(ckpt() + " forward --model " + model + " --ids " +
                                   tmp.file("noids.safetensors") + " --out " + tmp.file("o.safetensors"),
                               &log) == 1);
  CHECK_THAT(log, Contains("no tensor 'input_ids'"));

  CHECK(kto::test::run_command(ckpt() + " forward --model " + model, &log) == 2);
  CHECK_THAT(log, Contains("missing required --out"));
  CHECK(kto::test::run_command(ckpt() + " forward --model " + model + " --out " + tmp.file("o.safetensors"),
                               &log) == 2);
  CHECK_THAT(log, Contains("give one of --ids FILE, --text TEXT or --jsonl FILE"));
  CHECK(kto::test::run_command(ckpt() + " frobnicate", &log) == 2);
  CHECK_THAT(log, Contains("unknown command 'frobnicate'"));

  kto::test::write_bytes(tmp.file("bad.yaml"),
                         "model:\n  architecture:\n    arch: llama\n    vocab_sise: 3\n");
  CHECK(kto::test::run_command(ckpt() + " init --config " + tmp.file("bad.yaml") + " --out " + tmp.file("m"),
                               &log) == 1);
  CHECK_THAT(log, Contains("bad.yaml:4") && Contains("unknown key 'model.architecture.vocab_sise'") &&
                      Contains("did you mean 'vocab_size'"));
}

TEST_CASE("docs/configuration.md lists exactly the keys the code knows", "[e2e][docs]") {
  const std::string doc = kto::read_text_file(source_dir() + "/docs/configuration.md");
  const std::string begin = "<!-- BEGIN CONFIG REFERENCE -->\n", end = "<!-- END CONFIG REFERENCE -->";
  const size_t i = doc.find(begin), j = doc.find(end);
  REQUIRE(i != std::string::npos);
  REQUIRE(j != std::string::npos);
  std::string reference;
  REQUIRE(kto::test::run_command(ckpt() + " config --reference 2>/dev/null", &reference) == 0);
  INFO("regenerate with scripts/update-docs.sh");
  CHECK(doc.substr(i + begin.size(), j - i - begin.size()) == reference);
}
