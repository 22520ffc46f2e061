// tokenizer.json from a bad source: every mutation is an error that names the file and the part
// (never a crash, a silent acceptance or a huge allocation), and pathological text stays cheap.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "kto/util/check.h"
#include "kto/util/files.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

using json = nlohmann::json;
using Catch::Matchers::Contains;

namespace {

const json& neox() {
  static const json spec =
      json::parse(kto::read_text_file(kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b/tokenizer.json"));
  return spec;
}

// Loads `text` as DIR/t.json; returns the error message, or "loaded".
std::string load_error(const std::string& text) {
  kto::test::TempDir tmp;
  kto::write_text_file(tmp.file("t.json"), text);
  try {
    kto::tok::load_tokenizer(tmp.file("t.json"));
  } catch (const kto::Error& e) {
    return e.what();
  }
  return "loaded";
}
std::string load_error(const json& spec) { return load_error(spec.dump()); }

}  // namespace

TEST_CASE("bad token ids in tokenizer.json are errors naming the file and the entry",
          "[tokenizer][bad_input]") {
  SECTION("an added token with a negative id (was a heap corruption)") {
    json s = neox();
    s["added_tokens"][0]["id"] = -1;
    CHECK_THAT(load_error(s),
               Contains("t.json") && Contains("added_tokens[0].id") && Contains("outside [0, "));
  }
  SECTION("vocabulary ids of -1, 2^40 and 2^31-1 (were accepted; a table that large was allocated)") {
    for (int64_t id : {int64_t{-1}, int64_t{1} << 40, int64_t{2147483647}}) {
      json s = neox();
      s["model"]["vocab"]["Hello"] = id;
      INFO("id " << id);
      CHECK_THAT(load_error(s),
                 Contains("t.json") && Contains("model.vocab['Hello']") && Contains("outside [0, "));
    }
  }
  SECTION("duplicate vocabulary ids") {
    json s = neox();
    s["model"]["vocab"]["Hello"] = s["model"]["vocab"]["world"];
    CHECK_THAT(load_error(s), Contains("t.json") && Contains("ids must be unique"));
  }
  SECTION("an added token with empty content, and two added tokens with one id") {
    json s = neox();
    s["added_tokens"][1]["content"] = "";
    CHECK_THAT(load_error(s), Contains("t.json") && Contains("added_tokens[1] has an empty content"));
    s = neox();
    s["added_tokens"][2]["id"] = s["added_tokens"][1]["id"];
    CHECK_THAT(load_error(s),
               Contains("t.json") && Contains("added_tokens[2]") && Contains("already the id"));
  }
  SECTION("a value of the wrong type names its key") {
    json s = neox();
    s["model"]["vocab"]["Hello"] = "seven";
    CHECK_THAT(load_error(s), Contains("t.json") && Contains("model.vocab['Hello']") && Contains("integer"));
    s = neox();
    s["added_tokens"][0]["content"] = 5;
    CHECK_THAT(load_error(s), Contains("t.json") && Contains("/added_tokens/0/content"));
  }
}

TEST_CASE("a bad Split regex and deep nesting in tokenizer.json name the file", "[tokenizer][bad_input]") {
  json s = neox();
  s["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  CHECK_THAT(load_error(s), Contains("t.json") && Contains("bad regular expression"));
  // 100,000 nested arrays (nlohmann's dump and copies recurse: a stack overflow before).
  std::string deep = neox().dump();
  deep.insert(deep.size() - 1, ", \"extra\": " + std::string(100000, '[') + std::string(100000, ']'));
  CHECK_THAT(load_error(deep), Contains("t.json") && Contains("nested deeper than 64 levels"));
}

TEST_CASE("one huge word without spaces is tokenized exactly and decodes back", "[tokenizer][bad_input]") {
  // BPE merges a word in O(n log n): a 1 MiB word takes about a second (it was quadratic: 64 KiB
  // took 24 s, 256 KiB more than 5 minutes). Exactness on ordinary text: the golden cases.
  kto::test::TempDir tmp;
  const auto tok =
      kto::tok::load_tokenizer(kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b/tokenizer.json");
  // 1 MiB of pseudo-random letters: one pre-tokenized word (letters only, no spaces).
  std::string word;
  for (uint32_t x = 1; word.size() < (1u << 20);) {
    x = x * 1664525u + 1013904223u;
    word += static_cast<char>('a' + (x >> 24) % 26);
  }
  const std::vector<int32_t> ids = tok->encode(word, false);
  CHECK(ids.size() > 1000);
  CHECK(tok->decode(ids) == word);
  // The same word twice with a space between: the second copy encodes exactly like the first.
  const std::vector<int32_t> twice = tok->encode(word + " " + word, false);
  CHECK(twice.size() > ids.size());
  CHECK(tok->decode(twice) == word + " " + word);
}
