#include "synthetic.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kto/data/dataset.h"

namespace kto::test {

namespace {
uint64_t next(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

int64_t write_synthetic_dataset(const std::string& path, const SyntheticSpec& spec) {
  data::DatasetAttributes attrs;
  attrs.pad_id = 0;
  attrs.eos_id = 1;
  attrs.max_length = spec.prompt_len + spec.completion_len + 1;
  attrs.paired = spec.paired ? 1 : 0;
  attrs.tokenizer_name = "synthetic";
  attrs.control_tokens = spec.control_tokens;
  data::DatasetWriter writer(path, attrs, spec.reference_logps);
  uint64_t state = spec.seed;
  const int64_t half = (spec.vocab - 2) / 2;  // completion tokens: 2 + 2k (even) or 3 + 2k (odd)
  auto completion = [&](bool even) {
    std::vector<int32_t> c;
    for (int64_t k = 0; k < spec.completion_len; ++k) {
      c.push_back(static_cast<int32_t>(
          2 + 2 * static_cast<int64_t>(next(state) % static_cast<uint64_t>(half)) + (even ? 0 : 1)));
    }
    c.push_back(1);  // eos
    return c;
  };
  int64_t written = 0;
  for (int64_t i = 0; i < spec.examples; ++i) {
    std::vector<int32_t> prompt;
    for (int64_t k = 0; k < spec.prompt_len; ++k)
      prompt.push_back(static_cast<int32_t>(2 + next(state) % static_cast<uint64_t>(spec.vocab - 2)));
    const bool desirable = i % 2 == 0;
    if (!spec.control_tokens.empty()) prompt.back() = static_cast<int32_t>(spec.vocab - (desirable ? 2 : 1));
    for (int64_t marked : spec.rare_token_examples) {
      if (marked == written) prompt.front() = static_cast<int32_t>(spec.vocab);
    }
    const double u = static_cast<double>(next(state) >> 11) / 9007199254740992.0;
    if (spec.paired) {
      for (bool even : {true, false}) {
        std::vector<int32_t> t = prompt;
        const auto c = completion(even);
        t.insert(t.end(), c.begin(), c.end());
        writer.add(t, static_cast<int32_t>(spec.prompt_len), even);
        ++written;
      }
      continue;
    }
    if (u >= (desirable ? spec.keep_desirable : spec.keep_undesirable)) continue;
    std::vector<int32_t> t = prompt;
    const auto c = completion(desirable);
    t.insert(t.end(), c.begin(), c.end());
    const double uniform = -static_cast<double>(c.size()) * std::log(static_cast<double>(spec.vocab));
    const bool infinite =
        std::find(spec.infinite_reference_examples.begin(), spec.infinite_reference_examples.end(),
                  written) != spec.infinite_reference_examples.end();
    writer.add(t, static_cast<int32_t>(spec.prompt_len), desirable,
               infinite ? std::numeric_limits<double>::infinity() : uniform, uniform);
    ++written;
  }
  if (spec.reference_logps && !spec.paired) {  // KL partners: the next example (completions all alike)
    std::vector<int64_t> partners;
    for (int64_t i = 0; i < written; ++i) partners.push_back((i + 1) % written);
    writer.set_kl_partners(std::move(partners));
  }
  writer.finish();
  return written;
}

std::string synthetic_config(const std::string& train, const std::string& eval, const std::string& run_dir) {
  return "model:\n"
         "  architecture: {arch: llama, vocab_size: 64, hidden_size: 32, intermediate_size: 64,\n"
         "                 num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,\n"
         "                 max_position_embeddings: 64}\n"
         "  init_seed: 7\n"
         "data:\n"
         "  train: [" +
         train + "]\n" + (eval.empty() ? std::string() : "  eval: [" + eval + "]\n") +
         "  micro_batch: 8\n"
         "  global_batch: 16\n"
         "optim: {lr: 0.005}\n"
         "train: {steps: 60, log_every: 20, export_final: false}\n"
         "run: {dir: " +
         run_dir + ", threads: 1}\n";
}

}  // namespace kto::test
