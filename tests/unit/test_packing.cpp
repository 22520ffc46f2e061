// Packed batches and shared prompts (data.layout) against the padded computation: per-sequence
// log-probs of the target and KL batches and the gradients of the weights, for every family
// (Llama with GQA, Mistral's sliding window, Qwen2 with biases and a tied head, GPT-NeoX's
// partial rotary and parallel residual), in fp32 (1e-5 relative) and fp64 (1e-9), and on the
// Hugging Face reference cases ($KTO_HF_CASES or the fixture copy).
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <random>

#include "kto/data/batch.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/io/safetensors.h"
#include "kto/model/dense_model.h"
#include "kto/model/forward.h"
#include "kto/util/files.h"
#include "test_support.h"
#include "tiny_models.h"

using kto::data::BatchLayout;
using kto::data::Example;
using kto::model::ModelConfig;

namespace {

// The shared tiny model, with Mistral's window shorter than most sequences below and Qwen2's
// q/k/v bias and tied head.
ModelConfig tiny(const std::string& arch) {
  ModelConfig c = kto::test::tiny_config(arch);
  if (arch == "mistral") c.sliding_window = 4;
  if (arch == "qwen2") {
    c.attention_bias = true;
    c.tie_word_embeddings = true;
  }
  c.resolve_defaults();
  c.validate("tiny");
  return c;
}

// The dense model's buffers as leaves, handed to the units as they are.
class Leaves : public kto::model::UnitRunner {
 public:
  Leaves(const kto::model::DenseModel& m) : layout_(m.layout()) {
    for (const at::Tensor& u : m.units()) units_.push_back(u.detach().clone().requires_grad_(true));
  }
  at::Tensor run(size_t unit, const at::Tensor& x, const kto::model::UnitFn& fn) override {
    std::vector<at::Tensor> flats;
    for (size_t u : layout_.weight_units(unit)) flats.push_back(units_[u]);
    return fn(flats, x);
  }
  std::vector<at::Tensor> grads() const {
    std::vector<at::Tensor> g;
    for (const at::Tensor& u : units_) g.push_back(u.grad().defined() ? u.grad().clone() : at::zeros_like(u));
    return g;
  }

 private:
  const kto::model::ModelLayout& layout_;
  std::vector<at::Tensor> units_;
};

std::shared_ptr<const kto::model::ForwardContext> context_of(const kto::model::DenseModel& m,
                                                             const kto::data::TokenBatch& b) {
  auto c = std::make_shared<kto::model::ForwardContext>();
  c->attention = b.packed
                     ? kto::model::make_packed_attention_inputs(m.config(), *b.packed, m.dtype(), at::kCPU)
                     : kto::model::make_attention_inputs(m.config(), b.attention_mask, b.input_ids.size(1),
                                                         m.dtype(), at::kCPU);
  c->selection = b.selection;
  c->logprob_chunk_rows = 5;  // several chunks
  return c;
}

struct Result {
  at::Tensor target, kl;
  std::vector<at::Tensor> grads;
  int64_t positions = 0;
};

// Target log-probs (with grad; the loss is their weighted sum) and KL log-probs (no grad) of
// `examples` in `layout`: the KL batch in a walk of its own, or with shared prompts in the
// target batch's walk.
Result run(const kto::model::DenseModel& m, const std::vector<Example>& examples, BatchLayout layout,
           bool paired, int64_t max_length) {
  kto::data::BatchOptions o;
  o.layout = layout;
  o.paired = paired;
  o.build_kl = !paired;
  o.max_length = max_length;
  o.pad_to_multiple_of = 3;
  const kto::data::Microbatch mb = kto::data::assemble_microbatch(examples, o);
  Leaves leaves(m);
  Result r;
  const auto& cfg = m.config();
  const auto& layout_of = m.layout();
  if (!paired && layout == BatchLayout::shared_prompts) {
    const auto out =
        kto::model::forward_units_each(cfg, layout_of, leaves, {mb.target.input_ids, mb.kl.input_ids},
                                       {context_of(m, mb.target), context_of(m, mb.kl)});
    r.target = out[0];
    r.kl = out[1];
  } else {
    r.target =
        kto::model::forward_units(cfg, layout_of, leaves, mb.target.input_ids, context_of(m, mb.target));
    if (!paired) {
      at::NoGradGuard no_grad;
      r.kl = kto::model::forward_units(cfg, layout_of, leaves, mb.kl.input_ids, context_of(m, mb.kl));
    }
  }
  if (!paired) CHECK_FALSE(r.kl.requires_grad());
  const at::Tensor w = at::linspace(0.5, 1.5, r.target.size(0), r.target.options());
  (r.target * w).sum().backward();
  r.grads = leaves.grads();
  r.positions = mb.target.positions + (mb.kl.defined() ? mb.kl.positions : 0);
  return r;
}

double rel_max_diff(const at::Tensor& a, const at::Tensor& b) {
  const double scale = std::max(1e-30, b.abs().max().item<double>());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() / scale;
}

// Every layout against the padded one.
void check_layouts(const kto::model::DenseModel& m, const std::vector<Example>& examples, bool paired,
                   int64_t max_length, double tol) {
  const Result padded = run(m, examples, BatchLayout::padded, paired, max_length);
  for (BatchLayout layout : {BatchLayout::packed, BatchLayout::shared_prompts}) {
    INFO("layout " << kto::choice_name(kto::data::kBatchLayouts, layout));
    const Result r = run(m, examples, layout, paired, max_length);
    REQUIRE(r.target.sizes() == padded.target.sizes());
    for (int64_t i = 0; i < r.target.size(0); ++i) {
      INFO("target sequence " << i);
      CHECK(r.target[i].item<double>() ==
            Approx(padded.target[i].item<double>()).epsilon(tol).margin(tol * 1e-3));
    }
    if (!paired) {
      REQUIRE(r.kl.sizes() == padded.kl.sizes());
      for (int64_t i = 0; i < r.kl.size(0); ++i) {
        INFO("KL sequence " << i);
        CHECK(r.kl[i].item<double>() == Approx(padded.kl[i].item<double>()).epsilon(tol).margin(tol * 1e-3));
      }
    }
    for (size_t u = 0; u < r.grads.size(); ++u) {
      INFO("gradient of unit " << u);
      CHECK(rel_max_diff(r.grads[u], padded.grads[u]) <= tol);
    }
    CHECK(r.positions < padded.positions);  // no padding computed (and with shared prompts, fewer still)
  }
}

std::vector<int32_t> random_tokens(std::mt19937& g, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int32_t> d(1, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> t;
  for (int64_t i = 0; i < n; ++i) t.push_back(d(g));
  return t;
}

// Unpaired examples of mixed lengths (prompts 1..8 tokens, completions 1..7).
std::vector<Example> unpaired_examples(uint64_t seed, int64_t vocab) {
  std::mt19937 g(static_cast<uint32_t>(seed));
  std::vector<Example> out;
  for (int64_t i = 0; i < 5; ++i) {
    Example e;
    e.index = i;
    e.prompt_len = static_cast<int32_t>(1 + (i * 5 + seed) % 8);
    e.tokens = random_tokens(g, e.prompt_len + 1 + (i * 3 + seed) % 7, vocab);
    e.desirable = i % 2 == 0;
    out.push_back(e);
  }
  return out;
}

// Pairs (chosen rows first, then the rejected ones): the same prompt within a pair except for
// the last pair, whose rejected example has another prompt (not shared).
std::vector<Example> paired_examples(uint64_t seed, int64_t vocab) {
  std::mt19937 g(static_cast<uint32_t>(seed));
  const int64_t m = 3;
  std::vector<Example> chosen, rejected;
  for (int64_t k = 0; k < m; ++k) {
    const std::vector<int32_t> prompt = random_tokens(g, 1 + (k * 4 + seed) % 6, vocab);
    for (int side = 0; side < 2; ++side) {
      Example e;
      e.index = 2 * k + side;
      e.tokens = k == m - 1 && side == 1 ? random_tokens(g, 3, vocab) : prompt;
      e.prompt_len = static_cast<int32_t>(e.tokens.size());
      const std::vector<int32_t> c = random_tokens(g, 1 + (k + 2 * side + seed) % 6, vocab);
      e.tokens.insert(e.tokens.end(), c.begin(), c.end());
      (side == 0 ? chosen : rejected).push_back(e);
    }
  }
  chosen.insert(chosen.end(), rejected.begin(), rejected.end());
  return chosen;
}

}  // namespace

TEST_CASE("packed and shared-prompt batches give the padded log-probs and gradients", "[model][packing]") {
  for (const char* arch : {"llama", "mistral", "qwen2", "gpt_neox"}) {
    for (const auto& [dtype, tol] : {std::pair{at::kDouble, 1e-9}, std::pair{at::kFloat, 1e-5}}) {
      DYNAMIC_SECTION(arch << (dtype == at::kDouble ? " fp64" : " fp32")) {
        const ModelConfig c = tiny(arch);
        kto::model::DenseModel f32(c, at::kFloat);
        f32.init_random(11, 0.2);
        const kto::model::DenseModel m = f32.to(dtype);
        SECTION("unpaired, with KL batches") {
          check_layouts(m, unpaired_examples(3, c.vocab_size), false, 0, tol);
        }
        SECTION("unpaired, KL completions cut at max_length (some to nothing)") {
          check_layouts(m, unpaired_examples(4, c.vocab_size), false, 9, tol);
        }
        SECTION("paired, chosen and rejected sharing their prompt") {
          check_layouts(m, paired_examples(5, c.vocab_size), true, 0, tol);
        }
      }
    }
  }
}

TEST_CASE("a shared-prompt KL batch continues the target batch's prompts", "[data][packing]") {
  // Prompt lengths 1..8: each KL sequence is the prompt's last token and the borrowed completion,
  // attending the first prompt_len - 1 keys of its target sequence.
  const std::vector<Example> examples = unpaired_examples(3, 61);
  kto::data::BatchOptions o;
  o.layout = BatchLayout::shared_prompts;
  const kto::data::Microbatch mb = kto::data::assemble_microbatch(examples, o);
  REQUIRE(mb.kl.packed);
  REQUIRE(mb.target.packed);
  CHECK(mb.target.attention_pairs > 0);
  const auto& kl = mb.kl.packed->groups;
  const auto& target = mb.target.packed->groups;
  REQUIRE(kl.size() == examples.size());
  int64_t expected_tokens = 0;
  for (size_t i = 0; i < examples.size(); ++i) {
    const Example& e = examples[i];
    const Example& partner = examples[(i + 1) % examples.size()];
    CHECK(target[i].trunk == static_cast<int64_t>(e.tokens.size()));
    CHECK(kl[i].prefix_start == target[i].start);
    CHECK(kl[i].prefix_length == e.prompt_len - 1);
    CHECK(kl[i].length() == 1 + partner.completion_len());
    CHECK(mb.kl.input_ids[0][kl[i].start].item<int64_t>() == e.tokens[static_cast<size_t>(e.prompt_len - 1)]);
    expected_tokens += e.prompt_len + partner.completion_len();
    CHECK(mb.target.completion_tokens[static_cast<int64_t>(i)].item<int64_t>() == e.completion_len());
  }
  CHECK(mb.kl.num_tokens == expected_tokens);  // the sequences it stands for
  CHECK(mb.kl.positions == mb.kl.input_ids.size(1));
  CHECK(mb.kl.positions < expected_tokens);  // what it computes
  CHECK(mb.kl.real_positions == mb.kl.positions);
  const at::Tensor pos = mb.kl.packed->positions();
  CHECK(pos[kl[1].start].item<int64_t>() == examples[1].prompt_len - 1);  // true positions P - 1 + t
}

TEST_CASE("packed batches give the padded log-probs on every Hugging Face reference case",
          "[hf_reference][packing]") {
  kto::test::for_each_hf_case([](const std::string& name, const std::string& case_dir,
                                 const kto::io::SafetensorsSet& ref) {
    const at::Tensor ids = ref.read("input_ids");
    const at::Tensor mask = ref.read("attention_mask");
    // Each row's real tokens as an example: the first half its prompt, the rest its completion;
    // and as pairs, rows sharing the first row's prompt.
    std::vector<Example> unpaired;
    for (int64_t b = 0; b < ids.size(0); ++b) {
      Example e;
      e.index = b;
      for (int64_t t = 0; t < ids.size(1); ++t)
        if (mask[b][t].item<int64_t>() != 0)
          e.tokens.push_back(static_cast<int32_t>(ids[b][t].item<int64_t>()));
      e.prompt_len = static_cast<int32_t>(e.tokens.size() / 2);
      unpaired.push_back(e);
    }
    REQUIRE(unpaired.size() >= 2);
    std::vector<Example> paired = {unpaired[0], unpaired[1]};
    paired[1].tokens.assign(unpaired[0].tokens.begin(), unpaired[0].tokens.begin() + unpaired[0].prompt_len);
    paired[1].tokens.insert(paired[1].tokens.end(), unpaired[1].tokens.begin() + unpaired[1].prompt_len,
                            unpaired[1].tokens.end());
    paired[1].prompt_len = unpaired[0].prompt_len;
    for (const auto& [dtype, tol] : {std::pair{at::kDouble, 1e-9}, std::pair{at::kFloat, 1e-5}}) {
      DYNAMIC_SECTION(name << (dtype == at::kDouble ? " fp64" : " fp32")) {
        const kto::model::DenseModel m = kto::io::load_hf_model(case_dir, dtype);
        check_layouts(m, unpaired, false, 0, tol);
        check_layouts(m, paired, true, 0, tol);
      }
    }
  });
}
