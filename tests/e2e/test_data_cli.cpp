// End-to-end runs of kto-data as a user runs it.
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kto/data/dataset.h"
#include "kto/util/files.h"
#include "test_support.h"

using Catch::Matchers::Contains;
using json = nlohmann::json;

namespace {
std::string data_bin() { return kto::test::bin_dir() + "/kto-data"; }
}  // namespace

TEST_CASE("kto-data encode reproduces the public tokenizer cases through stdin/stdout", "[e2e][tokenizer]") {
  const std::string cases_file =
      kto::test::env_or("KTO_TOKENIZER_CASES", kto::test::fixtures_dir() + "/tokenizers/cases.jsonl");
  const std::string base = cases_file.substr(0, cases_file.find_last_of('/'));
  std::ifstream in(cases_file);
  std::string line;
  // Group the cases per (tokenizer, add_special_tokens): one process each, order preserved.
  std::map<std::pair<std::string, bool>, std::vector<json>> groups;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json c = json::parse(line);
    if (c.contains("patch")) continue;  // variants need a derived file: covered by the unit test
    groups[{c["tokenizer"].get<std::string>(), c["add_special_tokens"].get<bool>()}].push_back(c);
  }
  REQUIRE_FALSE(groups.empty());
  kto::test::TempDir tmp;
  for (const auto& [key, cases] : groups) {
    std::string input;
    for (const json& c : cases) input += json{{"text", c["text"]}}.dump() + "\n";
    kto::write_text_file(tmp.file("in.jsonl"), input);
    std::string out;
    const int rc = kto::test::run_command(data_bin() + " encode --tokenizer " + base + "/" + key.first +
                                              (key.second ? " --add-special-tokens" : "") + " < " +
                                              tmp.file("in.jsonl") + " 2>/dev/null",
                                          &out);
    REQUIRE(rc == 0);
    std::istringstream lines(out);
    for (const json& c : cases) {
      REQUIRE(std::getline(lines, line));
      CHECK(json::parse(line)["ids"] == c["ids"]);
    }
    CHECK_FALSE(std::getline(lines, line));  // one output line per input line
  }
}

TEST_CASE("kto-data encode reports malformed input with its line number", "[e2e][tokenizer]") {
  kto::test::TempDir tmp;
  kto::write_text_file(tmp.file("in.jsonl"), "{\"text\": \"ok\"}\n{\"txt\": 1}\n");
  std::string out;
  const std::string tok = kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b/tokenizer.json";
  CHECK(kto::test::run_command(data_bin() + " encode --tokenizer " + tok + " < " + tmp.file("in.jsonl"),
                               &out) == 1);
  CHECK_THAT(out, Contains("stdin:2") && Contains("\"text\""));
  CHECK(kto::test::run_command(data_bin() + " encode --tokenizer /nonexistent/tok.json < /dev/null", &out) ==
        1);
  CHECK_THAT(out, Contains("/nonexistent/tok.json"));
}

// (Short limits: many HH prompts are truncated, and both halves of a pair keep the same prompt.)
TEST_CASE("kto-data prepare --keep-pairs: chosen right before its rejected, in every shard and split",
          "[e2e][prepare]") {
  kto::test::TempDir tmp;
  const std::string tok = kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b/tokenizer.json";
  const std::string hh = kto::test::fixtures_dir() + "/data/hh-rlhf/harmless-base/test.jsonl.gz";
  std::string out;
  REQUIRE(kto::test::run_command(data_bin() + " prepare --input " + hh + " --tokenizer " + tok + " --out " +
                                     tmp.file("pairs") + " --keep-pairs --shards 3 --eval-fraction 0.05" +
                                     " --max-length 128 --max-prompt-length 64",
                                 &out) == 0);
  INFO(out);
  for (const std::string name :
       {"train-00000-of-00003.h5", "train-00001-of-00003.h5", "train-00002-of-00003.h5", "eval.h5"}) {
    const auto ds = kto::data::Dataset::open({tmp.file("pairs/" + name)});
    CHECK(ds->paired());
    REQUIRE(ds->size() % 2 == 0);
    for (int64_t k = 0; k < ds->size(); k += 2) {
      const auto chosen = ds->read(k), rejected = ds->read(k + 1);
      CHECK(chosen.desirable);
      CHECK_FALSE(rejected.desirable);
      CHECK(chosen.prompt_len == rejected.prompt_len);
      CHECK(std::equal(chosen.tokens.begin(), chosen.tokens.begin() + chosen.prompt_len,
                       rejected.tokens.begin()));
    }
  }
  // Unpaired rows cannot be kept as pairs: each is skipped with its reason.
  const std::string demo = kto::test::fixtures_dir() + "/data/kto/kto_en_demo.json";
  CHECK(kto::test::run_command(data_bin() + " prepare --input " + demo + " --tokenizer " + tok + " --out " +
                                   tmp.file("no_pairs") + " --keep-pairs",
                               &out) == 1);
  CHECK_THAT(out, Contains("not_paired"));
}

TEST_CASE("kto-data prepare and inspect, as a user runs them", "[e2e][prepare]") {
  kto::test::TempDir tmp;
  const std::string tok = kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b/tokenizer.json";
  const std::string demo = kto::test::fixtures_dir() + "/data/kto/kto_en_demo.json";
  std::string out;
  REQUIRE(kto::test::run_command(data_bin() + " prepare --input " + demo + " --tokenizer " + tok + " --out " +
                                     tmp.file("ds") + " --keep-desirable 0.2 --seed 3 --eval-fraction 0.1",
                                 &out) == 0);
  CHECK_THAT(out, Contains("300 rows") && Contains("recommended class weights") && Contains("train.h5"));
  const json summary = json::parse(kto::read_text_file(tmp.file("ds/summary.json")));
  CHECK(summary["undesirable"] == 150);
  CHECK(summary["desirable"].get<int>() + summary["subsampled_away"].get<int>() == 150);
  REQUIRE(kto::test::run_command(
              data_bin() + " inspect --file " + tmp.file("ds/train.h5") + " --tokenizer " + tok, &out) == 0);
  CHECK_THAT(out, Contains("format version 1") && Contains("length histogram") && Contains("[prompt]") &&
                      Contains("Human:"));

  kto::write_text_file(tmp.file("bad.jsonl"), "{\"prompt\": 1}\n");
  CHECK(kto::test::run_command(data_bin() + " prepare --input " + tmp.file("bad.jsonl") + " --tokenizer " +
                                   tok + " --out " + tmp.file("bad_out"),
                               &out) == 1);
  CHECK_THAT(out, Contains("bad.jsonl:1") && Contains("Nothing was written"));
  CHECK_FALSE(kto::path_exists(tmp.file("bad_out")));
}

TEST_CASE(
    "kto-data prepare --template chatml: warns without <|im_start|>, ends turns with <|im_end|> where it is "
    "a token",
    "[e2e][prepare]") {
  kto::test::TempDir tmp;
  const std::string neox = kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b/tokenizer.json";
  std::string rows;
  for (int i = 0; i < 6; ++i) {
    rows += "{\"messages\": [{\"role\": \"user\", \"content\": \"What is " + std::to_string(i) +
            " plus one?\"}, {\"role\": \"assistant\", \"content\": \"" + std::to_string(i + 1) +
            "\"}], \"label\": " + (i % 2 ? "true" : "false") + "}\n";
  }
  kto::write_text_file(tmp.file("rows.jsonl"), rows);
  std::string out;
  const std::string prepare =
      data_bin() + " prepare --input " + tmp.file("rows.jsonl") + " --template chatml --out ";
  REQUIRE(kto::test::run_command(prepare + tmp.file("plain") + " --tokenizer " + neox, &out) == 0);
  CHECK_THAT(out, Contains("has no <|im_start|> token") && Contains("spells it as text"));

  // The same tokenizer with ChatML's two special tokens added, as ChatML models' tokenizers have.
  json tok = json::parse(kto::read_text_file(neox));
  for (const auto& [id, content] :
       {std::pair<int, const char*>{50277, "<|im_start|>"}, {50278, "<|im_end|>"}}) {
    tok["added_tokens"].push_back({{"id", id},
                                   {"content", content},
                                   {"single_word", false},
                                   {"lstrip", false},
                                   {"rstrip", false},
                                   {"normalized", false},
                                   {"special", true}});
  }
  kto::write_text_file(tmp.file("chatml.json"), tok.dump());
  REQUIRE(kto::test::run_command(prepare + tmp.file("chatml") + " --tokenizer " + tmp.file("chatml.json"),
                                 &out) == 0);
  CHECK_THAT(out, !Contains("<|im_start|> token"));
  const auto ds = kto::data::Dataset::open({tmp.file("chatml/train.h5")});
  for (int64_t i = 0; i < ds->size(); ++i) {
    const auto ex = ds->read(i);
    CHECK(ex.tokens.back() == 50278);              // the completion ends its turn
    CHECK(ex.tokens[ex.prompt_len - 1] != 50278);  // (the prompt ends with "assistant\n")
  }
  CHECK(ds->attributes().eos_id == 50278);
}

TEST_CASE("kto-data prepare: an eval fraction that draws no example says so", "[e2e][prepare]") {
  kto::test::TempDir tmp;
  kto::write_text_file(tmp.file("rows.jsonl"),
                       "{\"prompt\": \"a\", \"completion\": \"b\", \"label\": true}\n"
                       "{\"prompt\": \"c\", \"completion\": \"d\", \"label\": false}\n"
                       "{\"prompt\": \"e\", \"completion\": \"f\", \"label\": true}\n");
  std::string out;
  // Each row goes to eval with probability 0.3: the first seed that draws none of the 3.
  for (int seed = 1; seed < 40; ++seed) {
    REQUIRE(kto::test::run_command(data_bin() + " prepare --input " + tmp.file("rows.jsonl") +
                                       " --tokenizer " + kto::test::fixtures_dir() +
                                       "/tokenizers/gpt-neox-20b/tokenizer.json --out " +
                                       tmp.file("o" + std::to_string(seed)) + " --eval-fraction 0.3 --seed " +
                                       std::to_string(seed),
                                   &out) == 0);
    if (!kto::path_exists(tmp.file("o" + std::to_string(seed)) + "/eval.h5")) break;
  }
  CHECK_THAT(out, Contains("--eval-fraction 0.3 drew no eval example from 3") && Contains("eval 0"));
}
