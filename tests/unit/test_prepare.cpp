// kto-data prepare: row formats, bad-input reasons, truncation, subsampling, splits, shards,
// atomic output — on the real HH-RLHF and KTO demo files and on crafted inputs.
#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "kto/data/dataset.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "prepare/prepare.h"
#include "prepare/rows.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

using json = nlohmann::json;
using Catch::Matchers::Contains;
using kto::data_tools::ChatTemplate;
using kto::data_tools::parse_row;
using kto::data_tools::PrepareOptions;

namespace {

std::string neox() { return kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b/tokenizer.json"; }
std::string llama() { return kto::test::fixtures_dir() + "/tokenizers/llama2/tokenizer.model"; }
std::string hh() { return kto::test::fixtures_dir() + "/data/hh-rlhf/harmless-base/test.jsonl.gz"; }
std::string kto_demo() { return kto::test::fixtures_dir() + "/data/kto/kto_en_demo.json"; }

std::string reason_of(const json& row) {
  const auto parsed = parse_row(row, ChatTemplate::builtin("hh"));
  return parsed.ok() ? "ok" : parsed.error.reason;
}

PrepareOptions options(const std::string& out, std::vector<std::string> inputs, const std::string& tok) {
  PrepareOptions o;
  o.inputs = std::move(inputs);
  o.tokenizer = tok;
  o.out_dir = out;
  o.threads = 2;
  return o;
}

std::vector<kto::data::Example> all_examples(const std::vector<std::string>& files) {
  const auto ds = kto::data::Dataset::open(files);
  std::vector<kto::data::Example> out;
  for (int64_t i = 0; i < ds->size(); ++i) out.push_back(ds->read(i));
  return out;
}

}  // namespace

TEST_CASE("rows of every accepted shape become the right examples", "[prepare]") {
  const auto t = ChatTemplate::builtin("hh");
  auto one = [&](const json& row) {
    const auto p = parse_row(row, t);
    REQUIRE(p.ok());
    return p.examples;
  };
  auto e = one({{"prompt", "Q"}, {"completion", "A"}, {"label", true}});
  CHECK((e.size() == 1 && e[0].prompt == "Q" && e[0].completion == "A" && e[0].desirable));
  e = one({{"input", "Q"}, {"output", "A"}, {"label", 0}});
  CHECK((e.size() == 1 && e[0].prompt == "Q" && !e[0].desirable));
  e = one(json::parse(
      R"({"prompt":[{"role":"user","content":"hi"}],"completion":[{"role":"assistant","content":"yo"}],"label":1})"));
  CHECK(e[0].prompt == "\n\nHuman: hi\n\nAssistant:");
  CHECK(e[0].completion == " yo");
  e = one(json::parse(
      R"({"messages":[{"role":"system","content":"S."},{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},{"role":"assistant","content":"d"}],"label":false})"));
  CHECK(e[0].prompt == "S.\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:");
  CHECK(e[0].completion == " d");
  CHECK_FALSE(e[0].desirable);
  e = one(json::parse(
      R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"r"}],"label":true})"));
  CHECK(e[0].completion == " r");
  e = one({{"prompt", "P"}, {"chosen", "good"}, {"rejected", "bad"}});
  REQUIRE(e.size() == 2);
  CHECK((e[0].desirable && e[0].completion == "good" && !e[1].desirable && e[1].prompt == "P"));
  e = one({{"chosen", "\n\nHuman: x\n\nAssistant: y\n\nHuman: z\n\nAssistant: good"},
           {"rejected", "\n\nHuman: x\n\nAssistant: y\n\nHuman: z\n\nAssistant: bad"}});
  CHECK(e[0].prompt == "\n\nHuman: x\n\nAssistant: y\n\nHuman: z\n\nAssistant:");
  CHECK(e[0].completion == " good");
  CHECK(e[1].completion == " bad");
  const auto chatml = ChatTemplate::builtin("chatml");
  const auto p = parse_row(
      json::parse(
          R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}],"label":true})"),
      chatml);
  CHECK(p.examples[0].prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  CHECK_THROWS_WITH(ChatTemplate::builtin("vicuna"), Contains("vicuna") && Contains("hh, chatml"));
}

TEST_CASE("each kind of bad row is skipped with its own reason", "[prepare]") {
  CHECK(reason_of(json::array({1, 2})) == "not_object");
  CHECK(reason_of({{"prompt", "Q"}, {"completion", "A"}}) == "missing_field");
  CHECK(reason_of({{"prompt", "Q"}, {"completion", "A"}, {"label", "yes"}}) == "wrong_type");
  CHECK(reason_of({{"prompt", "Q"}, {"completion", "A"}, {"label", 2}}) == "wrong_type");
  CHECK(reason_of({{"prompt", 5}, {"completion", "A"}, {"label", true}}) == "wrong_type");
  CHECK(reason_of({{"prompt", "Q"}, {"completion", ""}, {"label", true}}) == "empty_completion");
  CHECK(reason_of({{"text", "Q"}, {"label", true}}) == "unknown_format");
  CHECK(reason_of({{"chosen", "only chosen"}}) == "missing_field");
  CHECK(reason_of({{"chosen", "\n\nHuman: a\n\nAssistant: x"},
                   {"rejected", "\n\nHuman: b\n\nAssistant: y"}}) == "hh_prefix_mismatch");
  CHECK(reason_of({{"chosen", "no turns"}, {"rejected", "no turns either"}}) == "hh_no_assistant");
  CHECK(reason_of(json::parse(R"({"messages":[{"role":"user","content":"a"}],"label":true})")) ==
        "bad_messages");
  CHECK(reason_of(json::parse(R"({"messages":[{"role":"robot","content":"a"}],"label":true})")) ==
        "bad_messages");
}

TEST_CASE("prepare on Anthropic HH-RLHF: 2312 pairs, the 5 mismatched ones skipped", "[prepare]") {
  kto::test::TempDir tmp;
  auto o = options(tmp.file("hh"), {hh()}, neox());
  o.eval_fraction = 0.05;
  o.shards = 3;
  const auto s = kto::data_tools::run_prepare(o);
  CHECK(s.rows == 2312);
  CHECK(s.rows_skipped == 5);
  CHECK(s.skipped_by_reason.at("hh_prefix_mismatch") == 5);
  CHECK(s.examples == 2 * (2312 - 5));
  CHECK(s.desirable == 2307);
  CHECK(s.undesirable == 2307);
  CHECK(s.train_examples + s.eval_examples == s.examples);
  CHECK(s.eval_examples > 0);

  std::vector<std::string> train_files;
  for (int i = 0; i < 3; ++i)
    train_files.push_back(tmp.file("hh/train-0000" + std::to_string(i) + "-of-00003.h5"));
  const auto train = kto::data::Dataset::open(train_files);
  const auto eval = kto::data::Dataset::open({tmp.file("hh/eval.h5")});
  CHECK(train->size() == s.train_examples);
  CHECK(eval->size() == s.eval_examples);
  CHECK(train->attributes().tokenizer_sha256 == kto::tok::load_tokenizer(neox())->sha256());
  CHECK(train->attributes().eos_id == 0);
  const json summary = json::parse(kto::read_text_file(tmp.file("hh/summary.json")));
  CHECK(summary["examples"] == s.examples);

  // Both halves of a pair share their prompt and land in the same split (no prompt leaks).
  std::map<std::vector<int32_t>, std::set<std::string>> splits_of_prompt;
  for (const auto& [split, files] : {std::pair<std::string, std::vector<std::string>>{"train", train_files},
                                     {"eval", {tmp.file("hh/eval.h5")}}}) {
    for (const auto& e : all_examples(files)) {
      splits_of_prompt[std::vector<int32_t>(e.tokens.begin(), e.tokens.begin() + e.prompt_len)].insert(split);
      CHECK(e.tokens.back() == 0);  // EOS appended
    }
  }
  for (const auto& [prompt, splits] : splits_of_prompt) CHECK(splits.size() == 1);
}

TEST_CASE("prepare on the KTO demo set (JSON array of conversations)", "[prepare]") {
  kto::test::TempDir tmp;
  auto o = options(tmp.file("kto"), {kto_demo()}, llama());
  o.max_length = 256;
  o.max_prompt_length = 128;
  const auto s = kto::data_tools::run_prepare(o);
  CHECK(s.rows == 300);
  CHECK(s.rows_skipped == 0);
  CHECK(s.rows_by_format.at("conversational") == 300);
  CHECK(s.desirable == 150);
  CHECK(s.undesirable == 150);
  CHECK(s.prompt_truncated > 0);
  CHECK(s.completion_truncated > 0);
  const auto tok = kto::tok::load_tokenizer(llama());
  for (const auto& e : all_examples({tmp.file("kto/train.h5")})) {
    CHECK(static_cast<int64_t>(e.tokens.size()) <= 256);
    CHECK(e.prompt_len <= 256);
    CHECK(e.tokens.front() == tok->bos_id());  // SentencePiece adds BOS: so do we
  }
}

TEST_CASE("truncation keeps the prompt's end (and BOS), then cuts the completion's end", "[prepare]") {
  kto::test::TempDir tmp;
  const auto tok = kto::tok::load_tokenizer(llama());
  std::string long_prompt, long_completion;
  for (int i = 0; i < 40; ++i) long_prompt += "p" + std::to_string(i) + " ";
  for (int i = 0; i < 40; ++i) long_completion += "c" + std::to_string(i) + " ";
  kto::write_text_file(
      tmp.file("in.jsonl"),
      json{{"prompt", long_prompt}, {"completion", long_completion}, {"label", true}}.dump() + "\n" +
          json{{"prompt", "short"}, {"completion", "tiny"}, {"label", false}}.dump() + "\n");
  auto o = options(tmp.file("out"), {tmp.file("in.jsonl")}, llama());
  o.max_length = 64;
  o.max_prompt_length = 20;
  o.shuffle = false;
  const auto s = kto::data_tools::run_prepare(o);
  CHECK(s.prompt_truncated == 1);
  CHECK(s.completion_truncated == 1);
  const auto ex = all_examples({tmp.file("out/train.h5")});
  REQUIRE(ex.size() == 2);
  const auto full_prompt = tok->encode(long_prompt, false);
  const auto full_completion = tok->encode(long_completion, false);
  CHECK(ex[0].prompt_len == 20);
  CHECK(ex[0].tokens[0] == tok->bos_id());
  CHECK(std::vector<int32_t>(ex[0].tokens.begin() + 1, ex[0].tokens.begin() + 20) ==
        std::vector<int32_t>(full_prompt.end() - 19, full_prompt.end()));
  CHECK(ex[0].tokens.size() == 64u);
  CHECK(std::vector<int32_t>(ex[0].tokens.begin() + 20, ex[0].tokens.end()) ==
        std::vector<int32_t>(full_completion.begin(), full_completion.begin() + 44));
  CHECK(ex[1].tokens.back() == tok->eos_id());  // untruncated: EOS kept
}

TEST_CASE("per-class subsampling is seeded and counted", "[prepare]") {
  kto::test::TempDir tmp;
  auto run = [&](const std::string& name, uint64_t seed) {
    auto o = options(tmp.file(name), {kto_demo()}, neox());
    o.keep_desirable = 0.1;
    o.seed = seed;
    return kto::data_tools::run_prepare(o);
  };
  const auto a = run("a", 7), b = run("b", 7), c = run("c", 8);
  CHECK(a.undesirable == 150);
  CHECK(a.desirable > 3);
  CHECK(a.desirable < 30);
  CHECK(a.subsampled_away == 150 - a.desirable);
  CHECK(a.desirable == b.desirable);
  CHECK(kto::read_text_file(tmp.file("a/summary.json")).size() > 0);
  const auto ea = all_examples({tmp.file("a/train.h5")}), eb = all_examples({tmp.file("b/train.h5")});
  REQUIRE(ea.size() == eb.size());
  for (size_t i = 0; i < ea.size(); ++i) CHECK(ea[i].tokens == eb[i].tokens);  // same seed, same file
  // The imbalance shows in the recommended weights: lambda_D lifted, lambda_U kept at 1.
  CHECK(a.lambda_undesirable == 1.0);
  CHECK(a.lambda_desirable == Approx(150.0 / a.desirable));
  (void)c;
}

TEST_CASE("bad input: counted by reason, reported with file:line, fatal above the error rate", "[prepare]") {
  kto::test::TempDir tmp;
  std::string lines;
  for (int i = 0; i < 20; ++i)
    lines +=
        json{{"prompt", "q" + std::to_string(i)}, {"completion", "a"}, {"label", i % 2 == 0}}.dump() + "\n";
  lines += "{not json\n";                                                                // line 21
  lines += "{\"prompt\": \"bad \xff byte\", \"completion\": \"x\", \"label\": true}\n";  // line 22
  lines += json{{"prompt", "q"}, {"completion", "a"}}.dump() + "\n";                     // line 23
  lines += json{{"prompt", "q"}, {"completion", "a"}, {"label", "no"}}.dump() + "\n";
  lines += json{{"prompt", "q"}, {"completion", ""}, {"label", true}}.dump() + "\n";
  kto::write_text_file(tmp.file("in.jsonl"), lines);

  auto o = options(tmp.file("out"), {tmp.file("in.jsonl")}, neox());
  try {
    kto::data_tools::run_prepare(o);
    FAIL("no error");
  } catch (const kto::Error& e) {
    CHECK_THAT(std::string(e.what()), Contains("5 of 25 rows") && Contains("1 invalid_json") &&
                                          Contains("1 invalid_utf8") && Contains("1 missing_field") &&
                                          Contains("1 wrong_type") && Contains("1 empty_completion") &&
                                          Contains("in.jsonl:21") && Contains("Nothing was written"));
  }
  CHECK_FALSE(kto::path_exists(tmp.file("out")));
  std::string listing;
  kto::test::run_command("ls -A '" + tmp.path() + "'", &listing);
  CHECK(listing == "in.jsonl\n");  // no temporary directory left behind

  o.max_error_rate = 0.5;
  const auto s = kto::data_tools::run_prepare(o);
  CHECK(s.rows == 25);
  CHECK(s.rows_skipped == 5);
  CHECK(s.examples == 20);
  for (const char* reason :
       {"invalid_json", "invalid_utf8", "missing_field", "wrong_type", "empty_completion"}) {
    CHECK(s.skipped_by_reason.at(reason) == 1);
  }
  // The output exists now; a second run refuses to overwrite it unless told.
  CHECK_THROWS_WITH(kto::data_tools::run_prepare(o), Contains("already exists"));
  o.overwrite = true;
  CHECK_NOTHROW(kto::data_tools::run_prepare(o));
}

TEST_CASE("the paper's class-weight rule", "[prepare]") {
  using kto::data::recommended_class_weights;
  CHECK(recommended_class_weights(100, 100) == std::make_pair(1.0, 1.0));
  CHECK(recommended_class_weights(120, 100) == std::make_pair(1.0, 1.0));  // ratio 1.2 is inside [1, 4/3]
  const auto [d, u] = recommended_class_weights(10, 100);
  CHECK(d == Approx(10.0));
  CHECK(u == 1.0);
  const auto [d2, u2] = recommended_class_weights(400, 100);
  CHECK(d2 == 1.0);
  CHECK(400 * d2 / (100 * u2) == Approx(4.0 / 3.0));
  CHECK(recommended_class_weights(0, 10) == std::make_pair(1.0, 1.0));
}

TEST_CASE("control tokens (CSFT): every prompt ends with its label's token, also when truncated",
          "[prepare]") {
  kto::test::TempDir tmp;
  const auto tok = kto::tok::load_tokenizer(neox());
  std::string long_prompt;
  for (int i = 0; i < 40; ++i) long_prompt += "p" + std::to_string(i) + " ";
  kto::write_text_file(tmp.file("in.jsonl"),
                       json{{"prompt", long_prompt}, {"completion", " yes"}, {"label", true}}.dump() + "\n" +
                           json{{"prompt", "short"}, {"completion", " no"}, {"label", false}}.dump() + "\n");

  SECTION("tokens the tokenizer has: one id each") {
    // (Any two of its added tokens do; real runs use reserved tokens such as Llama-3's.)
    auto o = options(tmp.file("out"), {tmp.file("in.jsonl")}, neox());
    o.control_tokens = "<|padding|>,<|endoftext|>";
    o.max_length = 32;
    o.max_prompt_length = 16;
    o.shuffle = false;
    const auto s = kto::data_tools::run_prepare(o);
    CHECK(s.prompt_truncated == 1);
    const auto ex = all_examples({tmp.file("out/train.h5")});
    REQUIRE(ex.size() == 2);
    const int32_t good = tok->token_to_id("<|padding|>"), bad = tok->token_to_id("<|endoftext|>");
    REQUIRE(ex[0].desirable);
    CHECK(ex[0].prompt_len == 16);
    CHECK(ex[0].tokens[15] == good);  // the prompt's end, kept by truncation
    const auto full_prompt = tok->encode(long_prompt, false);
    CHECK(std::vector<int32_t>(ex[0].tokens.begin(), ex[0].tokens.begin() + 15) ==
          std::vector<int32_t>(full_prompt.end() - 15, full_prompt.end()));
    REQUIRE_FALSE(ex[1].desirable);
    auto short_prompt = tok->encode("short", false);
    short_prompt.push_back(bad);
    CHECK(std::vector<int32_t>(ex[1].tokens.begin(), ex[1].tokens.begin() + ex[1].prompt_len) ==
          short_prompt);
    // Recorded in every file and in summary.json.
    CHECK(kto::data::read_attributes(tmp.file("out/train.h5")).control_tokens == "<|padding|>,<|endoftext|>");
    CHECK(json::parse(kto::read_text_file(tmp.file("out/summary.json")))["control_tokens"] ==
          "<|padding|>,<|endoftext|>");
  }
  SECTION("strings that are not tokens: their text encoding") {
    auto o = options(tmp.file("out"), {tmp.file("in.jsonl")}, neox());
    o.control_tokens = "<|good|>,<|bad|>";
    o.shuffle = false;
    kto::data_tools::run_prepare(o);
    const auto ex = all_examples({tmp.file("out/train.h5")});
    REQUIRE(ex.size() == 2);
    const auto good = tok->encode("<|good|>", false);
    REQUIRE(good.size() > 1);
    CHECK(std::vector<int32_t>(ex[0].tokens.begin() + ex[0].prompt_len - static_cast<long>(good.size()),
                               ex[0].tokens.begin() + ex[0].prompt_len) == good);
  }
  SECTION("bad values name the option") {
    auto o = options(tmp.file("out"), {tmp.file("in.jsonl")}, neox());
    for (const char* bad : {"<|good|>", "a,a", "a,b,c", ",b"}) {
      o.control_tokens = bad;
      CHECK_THROWS_WITH(kto::data_tools::run_prepare(o), Contains("--control-tokens"));
    }
    CHECK_FALSE(kto::path_exists(tmp.file("out")));
  }
}

TEST_CASE("datasets whose control tokens differ are not mixed", "[prepare]") {
  kto::test::TempDir tmp;
  kto::write_text_file(tmp.file("in.jsonl"),
                       json{{"prompt", "a"}, {"completion", " b"}, {"label", true}}.dump() + "\n" +
                           json{{"prompt", "c"}, {"completion", " d"}, {"label", false}}.dump() + "\n");
  auto o = options(tmp.file("plain"), {tmp.file("in.jsonl")}, neox());
  kto::data_tools::run_prepare(o);
  o.out_dir = tmp.file("csft");
  o.control_tokens = "<|padding|>,<|endoftext|>";
  kto::data_tools::run_prepare(o);
  CHECK(kto::data::read_attributes(tmp.file("plain/train.h5")).control_tokens.empty());
  CHECK_THROWS_WITH(kto::data::Dataset::open({tmp.file("plain/train.h5"), tmp.file("csft/train.h5")}),
                    Contains("control tokens"));
}

TEST_CASE("prepare on bad input files: empty, truncated gzip, overlong lines, bad templates, too many shards",
          "[prepare][bad_input]") {
  kto::test::TempDir tmp;
  std::string rows;
  for (int i = 0; i < 40; ++i)
    rows +=
        json{{"prompt", "q" + std::to_string(i)}, {"completion", "a"}, {"label", i % 2 == 0}}.dump() + "\n";
  kto::write_text_file(tmp.file("rows.jsonl"), rows);
  auto error_of = [&](PrepareOptions o) {
    try {
      kto::data_tools::run_prepare(o);
    } catch (const kto::Error& e) {
      return std::string(e.what());
    }
    return std::string("prepared");
  };
  auto opts = [&](const std::string& input) { return options(tmp.file("out"), {input}, neox()); };

  SECTION("empty, whitespace-only and NUL-only inputs name the file") {
    for (const std::string& content : {std::string(), std::string(" \n\t\n  \n"), std::string(64, '\0')}) {
      kto::test::write_bytes(tmp.file("blank.jsonl"), content);
      INFO("content of " << content.size() << " bytes");
      CHECK_THAT(error_of(opts(tmp.file("blank.jsonl"))), Contains("blank.jsonl"));
    }
    CHECK_THAT(error_of(opts(tmp.file("blank.jsonl"))), Contains("invalid_json"));  // NULs are not JSON
  }
  SECTION("a gzip file cut short, or missing its trailer, is truncated (not invalid JSON)") {
    REQUIRE(kto::test::run_command("gzip -c '" + tmp.file("rows.jsonl") + "' > '" +
                                   tmp.file("rows.jsonl.gz") + "'") == 0);
    const std::string gz = kto::test::read_bytes(tmp.file("rows.jsonl.gz"));
    for (size_t cut : {size_t{1}, size_t{4}, size_t{8}, gz.size() / 2}) {
      kto::test::write_bytes(tmp.file("cut.jsonl.gz"), gz.substr(0, gz.size() - cut));
      INFO("cut " << cut << " bytes");
      CHECK_THAT(error_of(opts(tmp.file("cut.jsonl.gz"))), Contains("cut.jsonl.gz") && Contains("truncated"));
    }
    CHECK(error_of(opts(tmp.file("rows.jsonl.gz"))) == "prepared");
  }
  SECTION("a line longer than --max-line-bytes is skipped with its reason, read without being held") {
    std::string input =
        rows + json{{"prompt", "p"}, {"completion", std::string(1 << 20, 'x')}, {"label", true}}.dump() +
        "\n";
    kto::write_text_file(tmp.file("long.jsonl"), input);
    PrepareOptions o = opts(tmp.file("long.jsonl"));
    o.max_line_bytes = 4096;
    o.max_error_rate = 0.05;
    const auto s = kto::data_tools::run_prepare(o);
    CHECK(s.skipped_by_reason.at("line_too_long") == 1);
    CHECK(s.examples == 40);
  }
  SECTION("template files must be objects whose messages hold {content}") {
    kto::write_text_file(tmp.file("t1.json"), "[1]");
    PrepareOptions o = opts(tmp.file("rows.jsonl"));
    o.template_file = tmp.file("t1.json");
    CHECK_THAT(error_of(o),
               Contains("t1.json") && Contains("JSON object") && Contains("an array of 1 value"));
    kto::write_text_file(tmp.file("t2.json"),
                         R"({"user": "User: hello\n", "assistant": "Bot: {content}\n"})");
    o.template_file = tmp.file("t2.json");
    CHECK_THAT(error_of(o), Contains("t2.json") && Contains("'user' must contain {content}"));
  }
  SECTION("more shards than examples") {
    PrepareOptions o = opts(tmp.file("rows.jsonl"));
    o.shards = 100000;
    CHECK_THAT(error_of(o), Contains("--shards 100000 is more than the 40 examples"));
    o.shards = 100001;
    CHECK_THAT(error_of(o), Contains("--shards must be in [1, 100000]"));
  }
}
