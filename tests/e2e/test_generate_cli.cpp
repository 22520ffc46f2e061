// kto-ckpt generate as a user runs it: greedy ids are the argmax of kto-ckpt forward's logits for
// the sequence so far on every Hugging Face reference case (data-driven, KTO_HF_CASES), fp32 and
// fp64, with and without the KV cache; text prompts through the model directory's tokenizer
// (byte-level BPE and SentencePiece, via kto-data) and chat templates as kto-data renders them;
// stop strings, seeds, batch invariance; errors for what cannot work.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kto/io/safetensors.h"
#include "kto/util/files.h"
#include "test_support.h"
#include "tiny_models.h"

using json = nlohmann::json;
using Catch::Matchers::Contains;

namespace {

std::string ckpt() { return kto::test::bin_dir() + "/kto-ckpt"; }
std::string data_bin() { return kto::test::bin_dir() + "/kto-data"; }

std::vector<json> read_lines(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

// kto-ckpt generate with `args`; its output lines (REQUIREs success).
std::vector<json> generate(const std::string& args, const std::string& out) {
  std::string log;
  const int rc =
      kto::test::run_command(ckpt() + " generate " + args + " --out " + out + " --threads 1", &log);
  INFO(log);
  REQUIRE(rc == 0);
  return read_lines(out);
}

// A random GPT-NeoX whose vocabulary covers the NeoX tokenizer, or a Llama covering Llama 2's,
// with the tokenizer file copied in.
std::string model_with_tokenizer(const kto::test::TempDir& tmp, const std::string& kind) {
  const bool neox = kind == "neox";
  const std::string dir = tmp.file(kind), yaml = tmp.file(kind + ".yaml");
  kto::write_text_file(yaml, std::string("model:\n  architecture: {arch: ") + (neox ? "gpt_neox" : "llama") +
                                 ", vocab_size: " + (neox ? "50304" : "32000") +
                                 ", hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, "
                                 "num_attention_heads: 4, num_key_value_heads: " +
                                 (neox ? "4" : "2") +
                                 ", max_position_embeddings: 128}\ndata:\n  train: [x.h5]\n");
  std::string log;
  REQUIRE(kto::test::run_command(ckpt() + " init --config " + yaml + " --out " + dir, &log) == 0);
  const std::string src = kto::test::fixtures_dir() + "/tokenizers/" +
                          (neox ? "gpt-neox-20b/tokenizer.json" : "llama2/tokenizer.model");
  kto::test::write_bytes(dir + "/" + (neox ? "tokenizer.json" : "tokenizer.model"),
                         kto::test::read_bytes(src));
  return dir;
}

}  // namespace

TEST_CASE("kto-ckpt generate: greedy tokens are the argmax of kto-ckpt forward on every reference case",
          "[e2e][generate][hf_reference]") {
  kto::test::TempDir tmp;
  kto::test::for_each_hf_case(
      [&](const std::string& name, const std::string& case_dir, const kto::io::SafetensorsSet& ref) {
        const at::Tensor ids = ref.read("input_ids"), mask = ref.read("attention_mask");
        std::ostringstream prompts;
        for (int64_t b = 0; b < ids.size(0); ++b) {
          json row = {{"prompt_ids", json::array()}};
          for (int64_t t = 0; t < ids.size(1); ++t)
            if (mask[b][t].item<int64_t>() != 0) row["prompt_ids"].push_back(ids[b][t].item<int64_t>());
          prompts << row.dump() << "\n";
        }
        const std::string prompts_path = tmp.file(name + ".prompts.jsonl");
        kto::write_text_file(prompts_path, prompts.str());
        for (const std::string dtype : {"fp32", "fp64"}) {
          DYNAMIC_SECTION(name << " " << dtype) {
            const std::string args = "--model " + case_dir + " --prompts " + prompts_path +
                                     " --greedy --max-new-tokens 10 --eos-id -1 --dtype " + dtype;
            const auto cached = generate(args, tmp.file(name + dtype + ".jsonl"));
            const auto recomputed = generate(args + " --no-cache", tmp.file(name + dtype + ".nocache.jsonl"));
            REQUIRE(cached.size() == static_cast<size_t>(ids.size(0)));
            for (size_t i = 0; i < cached.size(); ++i) {
              const std::vector<int64_t> prompt = cached[i]["prompt_ids"], gen = cached[i]["generated_ids"];
              CHECK(gen == recomputed[i]["generated_ids"].get<std::vector<int64_t>>());
              CHECK(cached[i]["finish_reason"] == "length");
              CHECK(cached[i]["completion"].is_null());  // no tokenizer here
              REQUIRE(gen.size() == 10);
              // The whole sequence through kto-ckpt forward: each new token is the argmax of the
              // logits at the position before it.
              std::vector<int64_t> all = prompt;
              all.insert(all.end(), gen.begin(), gen.end());
              const std::string in = tmp.file(name + dtype + std::to_string(i) + ".ids.safetensors"),
                                out = tmp.file(name + dtype + std::to_string(i) + ".out.safetensors");
              kto::io::write_safetensors(in, {{"input_ids", at::tensor(all, at::kLong).view({1, -1})}});
              std::string log;
              REQUIRE(kto::test::run_command(ckpt() + " forward --model " + case_dir + " --ids " + in +
                                                 " --out " + out + " --dtype " + dtype + " --threads 1",
                                             &log) == 0);
              const at::Tensor argmax = kto::io::SafetensorsSet::open_file(out).read("logits")[0].argmax(-1);
              for (size_t k = 0; k < gen.size(); ++k) {
                INFO("prompt " << i << " new token " << k);
                CHECK(argmax[static_cast<int64_t>(prompt.size() + k - 1)].item<int64_t>() == gen[k]);
              }
            }
          }
        }
      });
}

TEST_CASE("kto-ckpt generate: text through the model's tokenizer and chat template, stops, seeds, batches",
          "[e2e][generate]") {
  kto::test::TempDir tmp;
  for (const std::string kind : {"neox", "llama2"}) {
    DYNAMIC_SECTION(kind) {
      const std::string model = model_with_tokenizer(tmp, kind);
      // The templated prompt is the text kto-data prepare would give the model, tokenized as it does.
      const auto templated = generate("--model " + model +
                                          " --prompt 'What is 2+2?' --template hh --greedy "
                                          "--max-new-tokens 6 --eos-id -1",
                                      tmp.file(kind + "a.jsonl"));
      REQUIRE(templated.size() == 1);
      std::string encoded;
      REQUIRE(kto::test::run_command(
                  "printf '%s\\n' '{\"text\": \"\\n\\nHuman: What is 2+2?\\n\\nAssistant:\"}' | " +
                      data_bin() + " encode --add-special-tokens --tokenizer " + model,
                  &encoded) == 0);
      const std::string ids_prompts = tmp.file(kind + "ids.jsonl");
      kto::write_text_file(ids_prompts, "{\"prompt_ids\": " + json::parse(encoded)["ids"].dump() + "}\n");
      const auto by_ids = generate(
          "--model " + model + " --prompts " + ids_prompts + " --greedy --max-new-tokens 6 --eos-id -1",
          tmp.file(kind + "b.jsonl"));
      CHECK(by_ids[0]["generated_ids"] == templated[0]["generated_ids"]);
      CHECK(templated[0]["prompt"] == "What is 2+2?");
      // The completion is the generated ids decoded (special tokens left out).
      std::string decoded;
      REQUIRE(kto::test::run_command("printf '%s\\n' '{\"ids\": " + templated[0]["generated_ids"].dump() +
                                         "}' | " + data_bin() + " decode --skip-special-tokens --tokenizer " +
                                         model,
                                     &decoded) == 0);
      CHECK(json::parse(decoded)["text"] == templated[0]["completion"]);

      // A stop string: the completion is cut before it and generation ends there.
      const std::string full = templated[0]["completion"];
      // Two plain ASCII letters from the second half of the completion (random models write odd text).
      std::string stop;
      for (size_t at = full.size() / 2; at + 1 < full.size() && stop.empty(); ++at)
        if (std::isalpha(static_cast<unsigned char>(full[at])) &&
            std::isalpha(static_cast<unsigned char>(full[at + 1])))
          stop = full.substr(at, 2);
      if (!stop.empty()) {
        const auto stopped = generate("--model " + model +
                                          " --prompt 'What is 2+2?' --template hh --greedy "
                                          "--max-new-tokens 6 --eos-id -1 --stop '" +
                                          stop + "'",
                                      tmp.file(kind + "c.jsonl"));
        CHECK(stopped[0]["finish_reason"] == "stop");
        CHECK(stopped[0]["completion"] == full.substr(0, full.find(stop)));
      }

      // Sampling: the same seed gives the same lines whatever --batch is; another seed differs.
      const std::string many = tmp.file(kind + "many.jsonl");
      kto::write_text_file(many,
                           "{\"prompt\": \"one\"}\n{\"prompt\": \"two words\"}\n"
                           "{\"prompt\": [{\"role\": \"user\", \"content\": \"three\"}]}\n");
      const std::string sampled = "--model " + model + " --prompts " + many +
                                  " --temperature 0.8 --top-p 0.9 --top-k 50 --max-new-tokens 8 --eos-id -1";
      const auto a = generate(sampled + " --seed 1 --batch 3", tmp.file(kind + "s1.jsonl"));
      const auto b = generate(sampled + " --seed 1 --batch 1", tmp.file(kind + "s2.jsonl"));
      const auto c = generate(sampled + " --seed 2 --batch 3", tmp.file(kind + "s3.jsonl"));
      REQUIRE(a.size() == 3);
      bool differs = false;
      for (size_t i = 0; i < 3; ++i) {
        CHECK(a[i]["generated_ids"] == b[i]["generated_ids"]);
        CHECK(a[i]["completion"] == b[i]["completion"]);
        differs = differs || a[i]["generated_ids"] != c[i]["generated_ids"];
      }
      CHECK(differs);
      CHECK(a[2]["prompt"].is_array());  // messages, rendered with hh (kto-data prepare's default)
    }
  }
}

TEST_CASE("kto-ckpt generate refuses what cannot work, naming it", "[e2e][generate]") {
  kto::test::TempDir tmp;
  const std::string case_dir = kto::test::fixtures_dir() + "/hf_models/llama_gqa";
  std::string log;
  CHECK(kto::test::run_command(ckpt() + " generate --model " + case_dir + " --prompt hello", &log) != 0);
  CHECK_THAT(log, Contains("has no tokenizer") && Contains("prompt_ids"));
  CHECK(kto::test::run_command(ckpt() + " generate --model " + case_dir + " --prompt x --temperature 0",
                               &log) == 2);
  CHECK_THAT(log, Contains("temperature"));
  CHECK(kto::test::run_command(ckpt() + " generate --model " + case_dir, &log) == 2);
  CHECK_THAT(log, Contains("--prompt TEXT or --prompts FILE"));
  const std::string bad = tmp.file("bad.jsonl");
  kto::write_text_file(bad, "{\"prompt_ids\": [1, 2]}\n{\"text\": 3}\n");
  CHECK(kto::test::run_command(ckpt() + " generate --model " + case_dir + " --prompts " + bad, &log) != 0);
  CHECK_THAT(log, Contains("bad.jsonl:2"));
  kto::write_text_file(bad, "{\"prompt_ids\": 5}\n");
  CHECK(kto::test::run_command(ckpt() + " generate --model " + case_dir + " --prompts " + bad, &log) != 0);
  CHECK_THAT(log, Contains("bad.jsonl:1: prompt_ids must be a list"));
  // An id the model has but its tokenizer lacks (a padded embedding row) decodes to U+FFFD.
  const std::string neox = kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b";
  REQUIRE(kto::test::run_command("printf '%s\\n' '{\"ids\": [12092, 50300, 1533]}' | " + data_bin() +
                                     " decode --tokenizer " + neox,
                                 &log) == 0);
  CHECK(json::parse(log)["text"] == "Hello\xEF\xBF\xBD world");
  kto::write_text_file(bad, "{\"prompt_ids\": [1, 999999]}\n");
  CHECK(kto::test::run_command(ckpt() + " generate --model " + case_dir + " --prompts " + bad, &log) != 0);
  CHECK_THAT(log, Contains("outside the vocabulary"));
}

TEST_CASE("kto-ckpt forward takes text and tokenizes it as kto-data does", "[e2e][generate]") {
  kto::test::TempDir tmp;
  const std::string model = model_with_tokenizer(tmp, "neox");
  const std::string lines = tmp.file("texts.jsonl");
  kto::write_text_file(lines, "{\"text\": \"Hello world\"}\n{\"text\": \"A longer line of text\"}\n");
  std::string log;
  REQUIRE(kto::test::run_command(ckpt() + " forward --model " + model + " --jsonl " + lines + " --out " +
                                     tmp.file("t.safetensors") + " --threads 1",
                                 &log) == 0);
  const auto by_text = kto::io::SafetensorsSet::open_file(tmp.file("t.safetensors"));
  const at::Tensor ids = by_text.read("input_ids"), mask = by_text.read("attention_mask");
  REQUIRE(ids.size(0) == 2);
  std::string encoded;
  REQUIRE(kto::test::run_command("printf '%s\\n' '{\"text\": \"A longer line of text\"}' | " + data_bin() +
                                     " encode --add-special-tokens --tokenizer " + model,
                                 &encoded) == 0);
  const std::vector<int64_t> expected = json::parse(encoded)["ids"];
  CHECK(mask[1].sum().item<int64_t>() == static_cast<int64_t>(expected.size()));
  for (size_t t = 0; t < expected.size(); ++t)
    CHECK(ids[1][static_cast<int64_t>(t)].item<int64_t>() == expected[t]);
  CHECK(mask[0].sum().item<int64_t>() < mask[1].sum().item<int64_t>());  // right-padded
  // The same ids given as a file give the same logits.
  kto::io::write_safetensors(tmp.file("ids.safetensors"), {{"input_ids", ids}, {"attention_mask", mask}});
  REQUIRE(kto::test::run_command(ckpt() + " forward --model " + model + " --ids " +
                                     tmp.file("ids.safetensors") + " --out " + tmp.file("i.safetensors") +
                                     " --threads 1",
                                 &log) == 0);
  CHECK(at::equal(kto::io::SafetensorsSet::open_file(tmp.file("i.safetensors")).read("logits"),
                  by_text.read("logits")));
  CHECK(kto::test::run_command(ckpt() + " forward --model " + model + " --text hi --ids x --out y", &log) ==
        2);
  CHECK_THAT(log, Contains("one of --ids FILE, --text TEXT or --jsonl FILE"));
}

TEST_CASE("kto-ckpt generate runs every reference case in bf16", "[e2e][generate][hf_reference]") {
  // Not compared exactly: the cached (packed) and recomputed attention round differently in bf16.
  kto::test::TempDir tmp;
  kto::test::for_each_hf_case([&](const std::string& name, const std::string& case_dir,
                                  const kto::io::SafetensorsSet&) {
    kto::write_text_file(tmp.file(name + ".jsonl"), "{\"prompt_ids\": [1, 2, 3]}\n{\"prompt_ids\": [4]}\n");
    const auto lines = generate("--model " + case_dir + " --prompts " + tmp.file(name + ".jsonl") +
                                    " --greedy --max-new-tokens 10 --eos-id -1 --dtype bf16",
                                tmp.file(name + ".bf16.jsonl"));
    const int64_t vocab = json::parse(kto::read_text_file(case_dir + "/config.json"))["vocab_size"];
    REQUIRE(lines.size() == 2);
    for (const json& l : lines) {
      INFO(name << " " << l.dump());
      CHECK(l["finish_reason"] == "length");
      REQUIRE(l["generated_ids"].size() == 10);
      for (const json& id : l["generated_ids"]) CHECK((id.get<int64_t>() >= 0 && id.get<int64_t>() < vocab));
    }
  });
}
