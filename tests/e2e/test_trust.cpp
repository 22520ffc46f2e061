// Trusting what a run did (issue 13): a resume that would change the experiment is refused with
// every changed key; tokenizers must match across the data and the model; final/ is usable as
// it is (tokenizer files, dtype); every documented launch of a shipped config is valid at its
// world size, and a global batch that cannot be met says which values would work, once.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "kto/io/safetensors.h"
#include "kto/util/files.h"
#include "kto/util/sha256.h"
#include "runs.h"

namespace {

using Catch::Matchers::Contains;
using json = nlohmann::json;

std::string source_dir() { return kto::test::fixtures_dir() + "/../.."; }
std::string bin(const std::string& tool) { return kto::test::bin_dir() + "/" + tool; }
std::string mpirun(int ranks) {
  return std::string(KTO_MPIEXEC) + " -np " + std::to_string(ranks) + " --oversubscribe ";
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::vector<json> segments(const std::string& run) {
  std::vector<json> out;
  std::istringstream in(kto::read_text_file(run + "/segments.jsonl"));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

// The KTO demo set prepared with `tokenizer` (a fixture path) into dir/data.
std::string prepare_demo(const std::string& dir, const std::string& tokenizer) {
  std::string log;
  const std::string out = dir + "/data";
  REQUIRE(kto::test::run_command(bin("kto-data") + " prepare --input " + kto::test::fixtures_dir() +
                                     "/data/kto/kto_en_demo.json --tokenizer " + tokenizer + " --out " + out +
                                     " --max-length 64 --max-prompt-length 32 --eval-fraction 0.1 --seed 1",
                                 &log) == 0);
  return out;
}

// A config for a tiny random Llama whose vocabulary holds both bundled tokenizers' ids.
std::string demo_config(const std::string& path, const std::string& train, const std::string& eval,
                        const std::string& extra = "") {
  kto::write_text_file(
      path,
      "model:\n  architecture: {arch: llama, vocab_size: 50304, hidden_size: 16, intermediate_size: "
      "32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 64}\n"
      "data: {train: [" +
          train + "]" + (eval.empty() ? "" : ", eval: [" + eval + "]") +
          ", micro_batch: 4}\n"
          "train: {steps: 2, peak_gflops: 1}\nrun: {threads: 1}\n" +
          extra);
  return path;
}

}  // namespace

TEST_CASE("resume refuses a changed experiment listing every key; allowed changes and --allow-change resume",
          "[e2e][trust][ckpt]") {
  kto::test::SyntheticSpec spec;
  kto::test::SyntheticTask task(spec, /*with_eval=*/true);
  kto::test::SyntheticSpec other = spec;
  other.seed = 99;
  other.examples = 64;
  kto::test::write_synthetic_dataset(task.dir.file("other.h5"), other);
  const std::string run = task.run();
  auto train = [&](const std::vector<std::string>& sets, std::string* log, int ranks = 1) {
    return kto::test::run_command(
        (ranks > 1 ? mpirun(ranks) : "") + bin("kto-train") + kto::test::train_args(task, run, sets), log);
  };
  std::string log;
  REQUIRE(train({"train.steps=4"}, &log) == 0);
  const std::string config0 = kto::read_text_file(run + "/config.yaml");

  SECTION("another loss, learning rate and data: refused, every key listed, once, nothing written") {
    // (At 2 ranks with half the micro batch: the same global batch and KL groups, so that the
    // world size is not among the changes.)
    const int rc =
        train({"loss.name=apo_zero", "optim.lr=0.01", "data.train=[" + task.dir.file("other.h5") + "]",
               "train.steps=6", "data.micro_batch=4"},
              &log, 2);
    INFO(log);
    CHECK(rc == 1);
    CHECK(count(log, "cannot resume from") == 1);  // rank 0 says it; both ranks end in order
    CHECK_THAT(log, Contains("loss.name: kto → apo_zero") && Contains("optim.lr: 0.005 → 0.01") &&
                        Contains("data.train[0]: 512 examples") && Contains("→ 64 examples"));
    CHECK_THAT(log, Contains("--allow-change data.train loss.name optim.lr"));
    CHECK_THAT(log, !Contains("train.steps: 4 → 6"));  // allowed, so not listed as a problem
    CHECK(kto::read_text_file(run + "/config.yaml") == config0);
    CHECK(segments(run).size() == 1);
  }
  SECTION("at 2 ranks with the same micro batch the KL groups double: refused, named") {
    CHECK(train({"train.steps=6"}, &log, 2) == 1);
    CHECK_THAT(
        log, Contains("data.global_microbatch: 8 → 16") && Contains("--allow-change data.global_microbatch"));
  }
  SECTION("a changed architecture is named as such") {
    CHECK(train({"model.architecture.hidden_size=64", "train.steps=6"}, &log) == 1);
    CHECK_THAT(log,
               Contains("model.architecture.hidden_size: 32 → 64") && Contains("model.architecture: llama"));
  }
  SECTION("more steps, cadence and threads resume; the history keeps each segment's config") {
    REQUIRE(train({"train.steps=6", "ckpt.every=3", "train.log_every=2", "run.threads=1"}, &log) == 0);
    CHECK_THAT(log, Contains("resuming with a change: train.steps: 4 → 6"));
    const auto segs = segments(run);
    REQUIRE(segs.size() == 2);
    CHECK(segs[0]["start_step"] == 0);
    CHECK(segs[0]["end_step"] == 4);
    CHECK(segs[1]["start_step"] == 4);
    CHECK(segs[1]["end_step"] == 6);
    CHECK(segs[1]["state"] == "done");
    CHECK(segs[1]["wall_s"].get<double>() > 0);
    CHECK_THAT(segs[1]["changes"].dump(), Contains("train.steps: 4 → 6"));
    CHECK(kto::read_text_file(run + "/configs/segment_000.yaml") == config0);
    CHECK_THAT(kto::read_text_file(run + "/configs/segment_001.yaml"), Contains("steps: 6"));
    SECTION("--allow-change names a key resuming may otherwise not change") {
      REQUIRE(kto::test::run_command(
                  bin("kto-train") + kto::test::train_args(task, run, {"train.steps=8", "optim.lr=0.01"}) +
                      " --allow-change optim.lr",
                  &log) == 0);
      CHECK_THAT(log, Contains("resuming with a change: optim.lr: 0.005 → 0.01"));
      CHECK(segments(run).size() == 3);
    }
    SECTION("a misspelt --allow-change is an error, not a silent pass") {
      CHECK(kto::test::run_command(bin("kto-train") + kto::test::train_args(task, run, {"train.steps=8"}) +
                                       " --allow-change optim.lrr",
                                   &log) == 1);
      CHECK_THAT(log, Contains("ckpt.allow_change") && Contains("'optim.lrr'"));
    }
  }
}

TEST_CASE("length-grouped batches train and resume; their microbatch size may not change on resume",
          "[e2e][trust][ckpt]") {
  kto::test::SyntheticSpec spec;
  kto::test::SyntheticTask task(spec, /*with_eval=*/false);
  const std::string run = task.run();
  auto train = [&](const std::vector<std::string>& sets, std::string* log) {
    return kto::test::run_command(bin("kto-train") + kto::test::train_args(task, run, sets), log);
  };
  std::string log;
  REQUIRE(train({"train.steps=4", "data.group_by_length=true", "data.group_microbatches=4"}, &log) == 0);
  REQUIRE(train({"train.steps=6", "data.group_by_length=true", "data.group_microbatches=4"}, &log) == 0);
  CHECK_THAT(log, Contains("resuming with a change: train.steps: 4 → 6"));
  // Half the microbatch (the global batch stays 16: twice the accumulation): another grouped order.
  CHECK(
      train({"train.steps=8", "data.group_by_length=true", "data.group_microbatches=4", "data.micro_batch=4"},
            &log) == 1);
  CHECK_THAT(log, Contains("data.length_group_run: 8 → 4"));
  // Turning grouping off changes the order too.
  CHECK(train({"train.steps=8"}, &log) == 1);
  CHECK_THAT(log, Contains("data.group_by_length: true → false"));
}

TEST_CASE("tokenizers must match: eval files and the model directory; an explicit override", "[e2e][trust]") {
  kto::test::TempDir dir;
  const std::string neox = kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b/tokenizer.json";
  const std::string llama = kto::test::fixtures_dir() + "/tokenizers/llama2/tokenizer.model";
  const std::string a = prepare_demo(dir.file("neox"), neox), b = prepare_demo(dir.file("llama"), llama);
  const std::string neox_sha = kto::sha256_file(neox), llama_sha = kto::sha256_file(llama);
  std::string log;
  SECTION("Llama-2 eval data beside GPT-NeoX training data") {
    const std::string config = demo_config(dir.file("c.yaml"), a + "/train.h5", b + "/eval.h5",
                                           "train: {steps: 2, peak_gflops: 1, export_final: false}\n");
    const std::string cmd = bin("kto-train") + " --config " + config + " --set run.dir=" + dir.file("run");
    CHECK(kto::test::run_command(cmd, &log) == 1);
    CHECK_THAT(log, Contains("key 'data.eval'") && Contains(b + "/eval.h5") && Contains(a + "/train.h5") &&
                        Contains(neox_sha) && Contains(llama_sha) &&
                        Contains("data.allow_tokenizer_mismatch"));
    REQUIRE(kto::test::run_command(cmd + " --set data.allow_tokenizer_mismatch=true", &log) == 0);
    CHECK_THAT(log, Contains("(data.allow_tokenizer_mismatch)"));
  }
  SECTION("Llama-2 data on a model directory whose tokenizer.json is GPT-NeoX's") {
    const std::string model = dir.file("model");
    const std::string init = demo_config(dir.file("init.yaml"), a + "/train.h5", "");
    REQUIRE(kto::test::run_command(bin("kto-ckpt") + " init --config " + init + " --out " + model, &log) ==
            0);
    kto::copy_file(neox, model + "/tokenizer.json");
    kto::write_text_file(dir.file("c.yaml"),
                         "model: {path: " + model + "}\ndata: {train: [" + b +
                             "/train.h5], micro_batch: 4}\ntrain: {steps: 1, peak_gflops: 1}\n"
                             "run: {threads: 1, dir: " +
                             dir.file("run") + "}\n");
    CHECK(kto::test::run_command(bin("kto-train") + " --config " + dir.file("c.yaml"), &log) == 1);
    CHECK_THAT(log, Contains("key 'model.path'") && Contains(model + "/tokenizer.json (sha256 " + neox_sha) &&
                        Contains(llama_sha));
    // Scoring with that model as the reference is refused the same way, and writes nothing.
    CHECK(kto::test::run_command(bin("kto-train") + " --config " + dir.file("c.yaml") +
                                     " --score-reference " + dir.file("scored"),
                                 &log) == 1);
    CHECK_THAT(log, Contains("key 'model.path'") && Contains(neox_sha) && Contains(llama_sha));
    CHECK_FALSE(kto::path_exists(dir.file("scored")));
  }
}

TEST_CASE("final/ is usable as it is: the tokenizer files, the export dtype, kto-ckpt forward on text",
          "[e2e][trust][export]") {
  kto::test::TempDir dir;
  const std::string fixture = kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b/tokenizer.json";
  // A copy of the tokenizer, so that the test can move it away afterwards.
  kto::make_directories(dir.file("tok"));
  kto::copy_file(fixture, dir.file("tok/tokenizer.json"));
  const std::string data = prepare_demo(dir.file("neox"), dir.file("tok/tokenizer.json"));
  const std::string config = demo_config(dir.file("c.yaml"), data + "/train.h5", "");
  std::string log;
  const std::string run = dir.file("run");
  const std::string train = bin("kto-train") + " --config " + config + " --set run.dir=";
  REQUIRE(kto::test::run_command(train + run, &log) == 0);
  INFO(log);
  // The tokenizer the data was prepared with (found by its recorded path and hash), fp32 for a
  // random init.
  REQUIRE(kto::path_exists(run + "/final/tokenizer.json"));
  CHECK(kto::sha256_file(run + "/final/tokenizer.json") == kto::sha256_file(fixture));
  CHECK_THAT(kto::read_text_file(run + "/final/config.json"), Contains("\"torch_dtype\": \"float32\""));

  // Text in, through the exported tokenizer, then kto-ckpt forward on the exported model.
  kto::write_text_file(dir.file("text.jsonl"), "{\"text\": \"The capital of France is Paris.\"}\n");
  std::string ids_json;
  REQUIRE(kto::test::run_command(bin("kto-data") + " encode --tokenizer " + run + "/final/tokenizer.json < " +
                                     dir.file("text.jsonl"),
                                 &ids_json) == 0);
  std::vector<int64_t> ids =
      json::parse(ids_json.substr(ids_json.find('{')))["ids"].get<std::vector<int64_t>>();
  REQUIRE(ids.size() > 3);
  kto::io::write_safetensors(
      dir.file("ids.safetensors"),
      {{"input_ids", at::tensor(ids, at::kLong).view({1, static_cast<int64_t>(ids.size())})}});
  REQUIRE(kto::test::run_command(bin("kto-ckpt") + " forward --model " + run + "/final --ids " +
                                     dir.file("ids.safetensors") + " --out " + dir.file("out.safetensors"),
                                 &log) == 0);
  const auto out = kto::io::SafetensorsSet::open_file(dir.file("out.safetensors"));
  CHECK(out.read("logits").size(1) == static_cast<int64_t>(ids.size()));

  SECTION("train.export_dtype bf16 halves the weights") {
    REQUIRE(kto::test::run_command(train + dir.file("bf16") + " --set train.export_dtype=bf16", &log) == 0);
    CHECK_THAT(kto::read_text_file(dir.file("bf16") + "/final/config.json"),
               Contains("\"torch_dtype\": \"bfloat16\""));
    const double ratio = static_cast<double>(kto::file_size(dir.file("bf16") + "/final/model.safetensors")) /
                         static_cast<double>(kto::file_size(run + "/final/model.safetensors"));
    CHECK(ratio == Approx(0.5).margin(0.01));
  }
  SECTION("a tokenizer that is gone is an error before training; none or a file given are fine") {
    kto::remove_tree(dir.file("tok"));
    CHECK(kto::test::run_command(train + dir.file("gone"), &log) == 1);
    CHECK_THAT(log, Contains("train.export_tokenizer") && Contains("no longer at") && Contains("none"));
    CHECK_FALSE(kto::path_exists(dir.file("gone") + "/metrics.jsonl"));  // nothing trained
    REQUIRE(kto::test::run_command(train + dir.file("none") + " --set train.export_tokenizer=none", &log) ==
            0);
    CHECK_FALSE(kto::path_exists(dir.file("none") + "/final/tokenizer.json"));
    REQUIRE(kto::test::run_command(train + dir.file("given") + " --set train.export_tokenizer=" + fixture,
                                   &log) == 0);
    CHECK(kto::path_exists(dir.file("given") + "/final/tokenizer.json"));
  }
  SECTION("kto-ckpt export: --tokenizer takes a file; no tokenizer is an error unless --no-tokenizer") {
    const std::string export_cmd =
        bin("kto-ckpt") + " export --checkpoint " + kto::test::step_dir(run, 2) + " --out " + dir.file("exp");
    CHECK(kto::test::run_command(export_cmd, &log) == 1);
    CHECK_THAT(log, Contains("--tokenizer FILE|DIR") && Contains("--no-tokenizer"));
    REQUIRE(kto::test::run_command(export_cmd + " --tokenizer " + fixture, &log) == 0);
    CHECK_THAT(log, Contains("1 tokenizer file(s)"));
    CHECK(kto::sha256_file(dir.file("exp") + "/tokenizer.json") == kto::sha256_file(fixture));
    REQUIRE(kto::test::run_command(export_cmd + "2 --no-tokenizer", &log) == 0);
    CHECK_FALSE(kto::path_exists(dir.file("exp2") + "/tokenizer.json"));
  }
}

TEST_CASE("every documented launch of a shipped config is valid at its world size", "[e2e][trust][docs]") {
  // Launch lines in the docs and in the configs' own comments: sbatch (8 ranks per node, as the
  // scripts' #SBATCH lines say; --nodes=N, else 1 or 2 nodes by script), launch/mpirun.sh (-n N,
  // else "on N GPUs" in the line, else one 8-GPU node), mpirun -np N.
  std::vector<std::string> files = {"README.md"};
  for (const char* d : {"building", "checkpoints", "configuration", "data", "distributed", "launching",
                        "model", "performance", "quickstart", "tools", "training", "troubleshooting"})
    files.push_back(std::string("docs/") + d + ".md");
  for (const char* c : {"demo", "tiny", "llama-2-7b", "llama-2-13b", "llama-30b", "pythia-1.4b"})
    files.push_back(std::string("configs/") + c + ".yaml");
  const std::regex config_re("configs/([a-z0-9.-]+)\\.yaml"), set_re("--set (data\\.[a-z_]+=[0-9]+)");
  const std::regex nodes_re("--nodes[= ]([0-9]+)"), n_re("(?:-n|-np|--ranks) ([0-9]+)"),
      gpus_re("on ([0-9]+) GPUs");
  int checked = 0;
  for (const std::string& f : files) {
    std::istringstream in(kto::read_text_file(source_dir() + "/" + f));
    int line_no = 0;
    for (std::string line; std::getline(in, line);) {
      ++line_no;
      std::smatch m;
      if (!std::regex_search(line, m, config_re)) continue;
      const std::string name = m[1];
      int world = 0;
      if (line.find("sbatch ") != std::string::npos) {
        const bool multi = line.find("multi-node") != std::string::npos;
        world = 8 * (std::regex_search(line, m, nodes_re) ? std::stoi(m[1]) : multi ? 2 : 1);
      } else if (line.find("mpirun") != std::string::npos) {
        world = std::regex_search(line, m, n_re)      ? std::stoi(m[1])
                : std::regex_search(line, m, gpus_re) ? std::stoi(m[1])
                                                      : 8;
      } else {
        continue;
      }
      std::string sets;
      for (auto it = std::sregex_iterator(line.begin(), line.end(), set_re); it != std::sregex_iterator();
           ++it)
        sets += " --set " + (*it)[1].str();
      const std::string hf = kto::test::fixtures_dir() + "/hf_configs/" + name;
      if (kto::path_exists(hf)) sets += " --set model.path=" + hf;
      std::string log;
      const int rc =
          kto::test::run_command(bin("kto-train") + " --dry-run --world-size " + std::to_string(world) +
                                     " --config " + source_dir() + "/configs/" + name + ".yaml" + sets,
                                 &log);
      INFO(f << ":" << line_no << ": " << line << "\nat " << world << " ranks:\n" << log);
      CHECK(rc == 0);
      CHECK_THAT(log, Contains("x " + std::to_string(world) + " (micro_batch x grad_accum x ranks)"));
      ++checked;
    }
  }
  CHECK(checked >= 10);
}

TEST_CASE("a global batch the world size cannot meet: the values that would work, said once",
          "[e2e][trust]") {
  std::string log;
  // The 7B recipe (global 32, micro 4) on 16 GPUs, sized with --dry-run.
  CHECK(kto::test::run_command(bin("kto-train") + " --dry-run --world-size 16 --config " + source_dir() +
                                   "/configs/llama-2-7b.yaml --set model.path=" + kto::test::fixtures_dir() +
                                   "/hf_configs/llama-2-7b",
                               &log) == 1);
  CHECK_THAT(log, Contains("32 is not divisible by micro_batch (4) x world size (16)") &&
                      Contains("data.micro_batch 2, 1 fit(s) global_batch 32") &&
                      Contains("data.global_batch 64 fit(s) micro_batch 4"));
  // A real start at 3 ranks: every rank finds it, rank 0 says it.
  kto::test::SyntheticTask task;
  CHECK(kto::test::run_command(mpirun(3) + bin("kto-train") + kto::test::train_args(task, task.run(), {}),
                               &log) == 1);
  INFO(log);
  CHECK(count(log, "is not divisible by micro_batch") == 1);
  CHECK_THAT(log, Contains("16 is not divisible by micro_batch (8) x world size (3)") &&
                      Contains("data.global_batch 24 fit(s) micro_batch 8"));
  CHECK_FALSE(kto::path_exists(task.run() + "/config.yaml"));
}

TEST_CASE("kto-train --dry-run sizes a job from config.json and the data's headers", "[e2e][trust]") {
  std::string log;
  REQUIRE(kto::test::run_command(bin("kto-train") + " --dry-run --world-size 8 --config " + source_dir() +
                                     "/configs/llama-2-7b.yaml --set model.path=" +
                                     kto::test::fixtures_dir() + "/hf_configs/llama-2-7b",
                                 &log) == 0);
  INFO(log);
  CHECK_THAT(log, Contains("6.74B parameters") && Contains("global 32 examples = 4 x 1 x 8") &&
                      Contains("per rank") && Contains("not found here"));
  kto::test::SyntheticTask task;
  REQUIRE(kto::test::run_command(
              bin("kto-train") + kto::test::train_args(task, task.run(), {}) + " --dry-run --world-size 2",
              &log) == 0);
  CHECK_THAT(log, Contains("512 examples (256 desirable, 256 undesirable)") && Contains("steps:     60"));
  CHECK_FALSE(kto::path_exists(task.run()));  // nothing written
}
