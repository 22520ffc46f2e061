// Tokenizers against the reference implementations' ids (data-driven).
//
// Every line of tests/fixtures/tokenizers/cases.jsonl and variant_cases.jsonl is checked — or
// of the file named by KTO_TOKENIZER_CASES — so more cases in that format need no code. Lines
// with a "patch" describe a tokenizer.json variant (RFC 7386 merge patch of the named file).
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "kto/util/check.h"
#include "kto/util/files.h"
#include "test_support.h"
#include "tokenizer/text.h"
#include "tokenizer/tokenizer.h"

using json = nlohmann::json;
using Catch::Matchers::Contains;

namespace {

std::string tokenizer_dir() { return kto::test::fixtures_dir() + "/tokenizers"; }

// Loads (and caches) the tokenizer a case line names, building its variant file if needed.
const kto::tok::Tokenizer& tokenizer_for(const json& c, const std::string& base_dir,
                                         kto::test::TempDir& tmp) {
  static std::map<std::string, std::unique_ptr<kto::tok::Tokenizer>> cache;
  const std::string base = base_dir + "/" + c.at("tokenizer").get<std::string>();
  const std::string key = base + "|" + c.value("variant", std::string());
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  std::string path = base;
  if (c.contains("patch")) {
    json spec = json::parse(kto::read_text_file(base));
    spec.merge_patch(c["patch"]);
    if (c.value("merges_as_pairs", false)) {
      for (json& m : spec["model"]["merges"]) {
        const std::string s = m.get<std::string>();
        m = json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
      }
    }
    for (const json& a : c.value("extra_added_tokens", json::array())) spec["added_tokens"].push_back(a);
    path = tmp.file("variant-" + c["variant"].get<std::string>() + ".json");
    kto::write_text_file(path, spec.dump());
  }
  return *cache.emplace(key, kto::tok::load_tokenizer(path)).first->second;
}

void check_case_file(const std::string& file, const std::string& base_dir) {
  kto::test::TempDir tmp;
  std::ifstream in(file);
  REQUIRE(in.good());
  std::string line;
  int checked = 0, failed = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const json c = json::parse(line);
    const auto& tok = tokenizer_for(c, base_dir, tmp);
    const auto expected = c.at("ids").get<std::vector<int32_t>>();
    const auto got = tok.encode(c.at("text").get<std::string>(), c.at("add_special_tokens").get<bool>());
    ++checked;
    if (got != expected) {
      ++failed;
      FAIL_CHECK(c["tokenizer"] << " " << c.value("variant", std::string())
                                << " special=" << c["add_special_tokens"] << " text "
                                << json(c["text"]).dump() << "\n expected " << json(expected).dump()
                                << "\n got      " << json(got).dump());
    }
  }
  INFO(file << ": " << checked << " cases");
  CHECK(checked > 0);
  CHECK(failed == 0);
}

}  // namespace

TEST_CASE("tokenizers reproduce the reference implementations' ids exactly", "[tokenizer]") {
  if (const char* file = std::getenv("KTO_TOKENIZER_CASES"); file != nullptr && *file != '\0') {
    // Tokenizer paths in an external file are relative to that file's directory.
    const std::string f = file;
    const size_t slash = f.find_last_of('/');
    check_case_file(f, slash == std::string::npos ? "." : f.substr(0, slash));
    return;
  }
  SECTION("public cases: GPT-NeoX tokenizer.json and Llama 2 tokenizer.model") {
    check_case_file(tokenizer_dir() + "/cases.jsonl", tokenizer_dir());
  }
  SECTION("tokenizer.json variants: Llama-3 / Qwen2 split regexes, templates, added tokens") {
    check_case_file(tokenizer_dir() + "/variant_cases.jsonl", tokenizer_dir());
  }
}

TEST_CASE("decode inverts encode", "[tokenizer]") {
  const auto neox = kto::tok::load_tokenizer(tokenizer_dir() + "/gpt-neox-20b/tokenizer.json");
  const auto llama = kto::tok::load_tokenizer(tokenizer_dir() + "/llama2/tokenizer.model");
  for (const std::string text :
       {"Hello world!", "two  spaces   three", "日本語のテキスト 😀👍🏽", "line1\nline2\n\n",
        "<|endoftext|>after"}) {
    INFO(text);
    CHECK(neox->decode(neox->encode(text, false)) == kto::tok::normalize(text, kto::tok::NormalForm::nfc));
    CHECK(llama->decode(llama->encode(text, false)) == text);
  }
  CHECK(neox->decode(neox->encode("<|endoftext|>hi", false), true) == "hi");
  CHECK(std::string(neox->kind()) == "hf-bpe");
  CHECK(neox->vocab_size() == 50277);
  CHECK(neox->eos_id() == 0);
  CHECK(neox->pad_id() == 1);
  CHECK(llama->bos_id() == 1);
  CHECK(llama->eos_id() == 2);
  CHECK(llama->vocab_size() == 32000);
  CHECK(llama->token_to_id("</s>") == 2);
  CHECK(neox->sha256() == "56ac4821e129d2c520fdaba60abd920fa852ada51b45c0dd52bbb6bd8c985ade");
  CHECK_THROWS_WITH(neox->encode(std::string("bad \xff byte"), false), Contains("UTF-8"));
}

TEST_CASE("unsupported or broken tokenizer files are errors naming the file and the part", "[tokenizer]") {
  kto::test::TempDir tmp;
  json spec = json::parse(kto::read_text_file(tokenizer_dir() + "/gpt-neox-20b/tokenizer.json"));
  auto try_load = [&](const json& s) {
    kto::write_text_file(tmp.file("t.json"), s.dump());
    try {
      kto::tok::load_tokenizer(tmp.file("t.json"));
    } catch (const kto::Error& e) {
      return std::string(e.what());
    }
    return std::string("loaded");
  };
  json s = spec;
  s["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  CHECK_THAT(try_load(s), Contains("t.json") && Contains("pre_tokenizer type 'BertPreTokenizer'"));
  s = spec;
  s["model"]["type"] = "WordPiece";
  CHECK_THAT(try_load(s), Contains("model type 'WordPiece'"));
  s = spec;
  s["model"]["merges"].push_back("zzzq qqqz");
  CHECK_THAT(try_load(s), Contains("not in the vocab"));
  s = spec;
  s["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  CHECK_THAT(try_load(s), Contains("bad regular expression") && Contains("(unclosed"));
  kto::write_text_file(tmp.file("broken.json"), "{\"model\": ");
  CHECK_THROWS_WITH(kto::tok::load_tokenizer(tmp.file("broken.json")),
                    Contains("broken.json") && Contains("JSON"));
  CHECK_THROWS_WITH(kto::tok::load_tokenizer(tmp.file("none.model")), Contains("none.model"));
  kto::write_text_file(tmp.file("junk.model"), "not a model");
  CHECK_THROWS_WITH(kto::tok::load_tokenizer(tmp.file("junk.model")),
                    Contains("junk.model") && Contains("SentencePiece"));
}
