// Generation (kto/model/generate.h): sampling follows the definitions of temperature, top-k and
// top-p on a fixed distribution and is reproducible with a seed; the KV-cached path gives the
// ids of recomputing every whole sequence at every step — on every Hugging Face reference case
// ($KTO_HF_CASES or the fixture copy) in fp32 and fp64, and on a Mistral with a sliding window
// shorter than the sequences — whatever the batch holds.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <catch2/catch.hpp>
#include <cmath>

#include "kto/io/hf_checkpoint.h"
#include "kto/model/generate.h"
#include "tiny_models.h"

using kto::model::SamplingOptions;

namespace {

// log([0.4, 0.3, 0.2, 0.1]) + 3: softmax gives back those probabilities.
at::Tensor fixed_logits() { return at::log(at::tensor({0.4, 0.3, 0.2, 0.1}, at::kDouble)).add_(3.0); }

void check_distribution(const at::Tensor& got, const std::vector<double>& expected) {
  REQUIRE(got.numel() == static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO("token " << i);
    CHECK(got[static_cast<int64_t>(i)].item<double>() == Approx(expected[i]).margin(1e-12));
  }
}

// Each row's real tokens (attention mask 1) of a reference case.
std::vector<std::vector<int64_t>> case_rows(const kto::io::SafetensorsSet& ref) {
  const at::Tensor ids = ref.read("input_ids"), mask = ref.read("attention_mask");
  std::vector<std::vector<int64_t>> rows;
  for (int64_t b = 0; b < ids.size(0); ++b) {
    std::vector<int64_t> r;
    for (int64_t t = 0; t < ids.size(1); ++t)
      if (mask[b][t].item<int64_t>() != 0) r.push_back(ids[b][t].item<int64_t>());
    rows.push_back(r);
  }
  return rows;
}

// Cached vs recomputed, batched vs alone: the same ids and finish reasons.
void check_cache_exact(const kto::model::DenseModel& m, const std::vector<std::vector<int64_t>>& prompts,
                       kto::model::GenerateOptions o) {
  o.kv_cache = true;
  const auto cached = kto::model::generate(m, prompts, o);
  o.kv_cache = false;
  const auto recomputed = kto::model::generate(m, prompts, o);
  REQUIRE(cached.size() == prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("prompt " << i << " of " << prompts[i].size() << " tokens");
    CHECK(cached[i].ids == recomputed[i].ids);
    CHECK(cached[i].finish_reason == recomputed[i].finish_reason);
    CHECK_FALSE(cached[i].ids.empty());
    o.kv_cache = true;
    o.first_index = static_cast<int64_t>(i);  // its own random stream, as in the batch
    const auto alone = kto::model::generate(m, {prompts[i]}, o);
    o.first_index = 0;
    CHECK(alone[0].ids == cached[i].ids);
  }
}

}  // namespace

TEST_CASE("sampling follows the definitions of temperature, top-k and top-p", "[generate]") {
  const at::Tensor logits = fixed_logits();
  SamplingOptions o;
  check_distribution(kto::model::sampling_distribution(logits, o), {0.4, 0.3, 0.2, 0.1});
  o.temperature = 0.5;  // p^2, renormalised
  check_distribution(kto::model::sampling_distribution(logits, o),
                     {0.16 / 0.3, 0.09 / 0.3, 0.04 / 0.3, 0.01 / 0.3});
  o.temperature = 1.0;
  o.top_k = 2;
  check_distribution(kto::model::sampling_distribution(logits, o), {0.4 / 0.7, 0.3 / 0.7, 0, 0});
  o.top_k = 0;
  o.top_p = 0.65;  // 0.4 < 0.65 <= 0.7: the two most likely
  check_distribution(kto::model::sampling_distribution(logits, o), {0.4 / 0.7, 0.3 / 0.7, 0, 0});
  o.top_p = 0.75;  // 0.7 < 0.75 <= 0.9: three
  check_distribution(kto::model::sampling_distribution(logits, o), {0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9, 0});
  o.top_p = 0.1;  // the most likely alone
  check_distribution(kto::model::sampling_distribution(logits, o), {1, 0, 0, 0});
  o.top_k = 3;
  o.top_p = 0.8;  // within the top 3 (0.4, 0.3, 0.2)/0.9: 0.78 < 0.8, so all three
  check_distribution(kto::model::sampling_distribution(logits, o), {0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9, 0});
  SamplingOptions greedy;
  greedy.greedy = true;
  check_distribution(kto::model::sampling_distribution(logits, greedy), {1, 0, 0, 0});

  SECTION("ties: the lower id first, for top-k and greedy alike") {
    const at::Tensor tied = at::tensor({1.0, 2.0, 2.0, 0.0}, at::kDouble);
    SamplingOptions k1;
    k1.top_k = 1;
    check_distribution(kto::model::sampling_distribution(tied, k1), {0, 1, 0, 0});
    check_distribution(kto::model::sampling_distribution(tied, greedy), {0, 1, 0, 0});
  }
  SECTION("bad options are refused naming them") {
    SamplingOptions bad;
    bad.temperature = 0;
    CHECK_THROWS_WITH(kto::model::sampling_distribution(logits, bad), Catch::Contains("temperature"));
    bad = {};
    bad.top_p = 0;
    CHECK_THROWS_WITH(kto::model::sampling_distribution(logits, bad), Catch::Contains("top_p"));
    bad = {};
    bad.top_k = -1;
    CHECK_THROWS_WITH(kto::model::sampling_distribution(logits, bad), Catch::Contains("top_k"));
  }
}

TEST_CASE("seeded sampling is reproducible and draws from the stated distribution", "[generate]") {
  const at::Tensor logits = fixed_logits();
  SamplingOptions o;
  o.top_k = 3;
  auto draws = [&](uint64_t seed) {
    at::Generator g = at::detail::createCPUGenerator(seed);
    std::vector<int64_t> out;
    for (int i = 0; i < 20000; ++i) out.push_back(kto::model::next_token(logits, o, g));
    return out;
  };
  const auto a = draws(7), b = draws(7), c = draws(8);
  CHECK(a == b);
  CHECK(a != c);
  std::vector<double> freq(4, 0);
  for (int64_t t : a) freq[static_cast<size_t>(t)] += 1.0 / 20000;
  CHECK(freq[3] == 0);  // outside the top 3
  CHECK(freq[0] == Approx(0.4 / 0.9).margin(0.015));
  CHECK(freq[1] == Approx(0.3 / 0.9).margin(0.015));
  CHECK(freq[2] == Approx(0.2 / 0.9).margin(0.015));
}

TEST_CASE("KV-cached generation equals recomputing the whole sequence on every reference case",
          "[generate][hf_reference]") {
  kto::test::for_each_hf_case(
      [](const std::string& name, const std::string& case_dir, const kto::io::SafetensorsSet& ref) {
        std::vector<std::vector<int64_t>> prompts = case_rows(ref);
        prompts.push_back({prompts[0].begin(), prompts[0].begin() + 2});  // a short one beside the others
        for (const auto dtype : {at::kFloat, at::kDouble}) {
          DYNAMIC_SECTION(name << " " << c10::toString(dtype)) {
            const kto::model::DenseModel m = kto::io::load_hf_model(case_dir, dtype);
            kto::model::GenerateOptions o;
            o.max_new_tokens = 12;
            o.sampling.greedy = true;
            check_cache_exact(m, prompts, o);
            o.sampling = {};
            o.sampling.temperature = 0.9;
            o.sampling.top_p = 0.95;
            o.seed = 5;
            check_cache_exact(m, prompts, o);
          }
        }
      });
}

TEST_CASE("generation stops at EOS, at a stop rule and at the length limits", "[generate]") {
  kto::model::DenseModel m(kto::test::tiny_config("llama"), at::kDouble);
  m.init_random(3, 0.3);
  kto::model::GenerateOptions o;
  o.sampling.greedy = true;
  o.max_new_tokens = 8;
  const std::vector<std::vector<int64_t>> prompts = {{3, 9, 4}, {7}};
  const auto free = kto::model::generate(m, prompts, o);
  for (const auto& g : free) {
    CHECK(g.ids.size() == 8);
    CHECK(g.finish_reason == "length");
  }
  o.eos_id = free[0].ids[2];  // the third token ends the first sequence
  const auto eos = kto::model::generate(m, prompts, o);
  CHECK(eos[0].finish_reason == "eos");
  CHECK(eos[0].ids == std::vector<int64_t>(free[0].ids.begin(), free[0].ids.begin() + 3));
  o.eos_id = -1;
  o.stop = [](size_t i, const std::vector<int64_t>& ids) { return i == 1 && ids.size() == 2; };
  const auto stopped = kto::model::generate(m, prompts, o);
  CHECK(stopped[0].ids == free[0].ids);
  CHECK(stopped[1].finish_reason == "stop");
  CHECK(stopped[1].ids.size() == 2);
  o.stop = nullptr;
  o.max_new_tokens = 1000;  // capped by max_position_embeddings (64)
  const auto longest = kto::model::generate(m, {{5, 6, 7, 8}}, o);
  CHECK(longest[0].ids.size() == 60);
  CHECK(longest[0].finish_reason == "length");
  CHECK_THROWS_WITH(kto::model::generate(m, {{}}, o), Catch::Contains("prompt 1 has no tokens"));
  CHECK_THROWS_WITH(kto::model::generate(m, {{1, 61}}, o), Catch::Contains("outside the vocabulary"));
}

TEST_CASE("KV-cached generation is exact past a Mistral sliding window", "[generate]") {
  kto::model::ModelConfig c = kto::test::tiny_config("mistral");
  c.sliding_window = 4;
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    kto::model::DenseModel m(c, at::kFloat);
    m.init_random(11, 0.3);
    if (dtype == at::kDouble) m = m.to(at::kDouble);
    kto::model::GenerateOptions o;
    o.sampling.greedy = true;
    o.max_new_tokens = 14;
    check_cache_exact(m, {{2, 5, 7, 11, 13, 17, 19}, {3}, {23, 29, 31, 37, 41}}, o);
  }
}
