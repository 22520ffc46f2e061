// The model core beyond the golden cases: layouts, padding, sliding windows, RoPE scaling,
// chunked log-probs (values and gradients), dtypes, deterministic init, HF export/import.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cmath>

#include "kto/io/hf_checkpoint.h"
#include "kto/model/blocks.h"
#include "kto/model/cpu_allocator.h"
#include "kto/model/dense_model.h"
#include "kto/model/hf_config.h"
#include "kto/model/logprob.h"
#include "kto/util/check.h"
#include "test_support.h"
#include "tiny_models.h"

using kto::model::DenseModel;
using kto::model::ModelConfig;

namespace {

ModelConfig tiny(const std::string& arch) { return kto::test::tiny_config(arch); }

DenseModel random_model(const ModelConfig& c, at::ScalarType dtype = at::kFloat, uint64_t seed = 7) {
  DenseModel m(c, at::kFloat);
  m.init_random(seed, 0.2);
  return dtype == at::kFloat ? m : m.to(dtype);
}

at::Tensor random_ids(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randint(V, {B, T}, gen, at::kLong);
}

}  // namespace

TEST_CASE("layouts hold every parameter once, with q/k/v and gate/up adjacent", "[model]") {
  for (const std::string arch : {"llama", "mistral", "qwen2", "gpt_neox"}) {
    for (bool tied : {false, true}) {
      ModelConfig c = tiny(arch);
      c.tie_word_embeddings = tied;
      const auto layout = kto::model::ModelLayout::build(c);
      INFO(arch << " tied=" << tied);
      CHECK(layout.numel == c.num_parameters());
      CHECK(layout.units.size() == static_cast<size_t>(c.num_hidden_layers) + 2);
      CHECK((layout.head().find(kto::model::Role::lm_head) == nullptr) == tied);
      for (const auto& unit : layout.units) {
        int64_t next = 0;
        for (const auto& p : unit.params) {
          CHECK(p.offset == next);  // back to back, no gaps
          next += p.numel;
        }
        CHECK(next == unit.numel);
      }
      const auto& block = layout.block(1);
      if (arch != "gpt_neox") {
        CHECK(block.at(kto::model::Role::k_w).offset ==
              block.at(kto::model::Role::q_w).offset + block.at(kto::model::Role::q_w).numel);
        CHECK(block.at(kto::model::Role::up_w).offset ==
              block.at(kto::model::Role::gate_w).offset + block.at(kto::model::Role::gate_w).numel);
      }
    }
  }
  // Qwen2 always has q/k/v biases and no o_proj bias; GPT-NeoX always has MLP biases.
  const auto qwen = kto::model::ModelLayout::build(tiny("qwen2"));
  CHECK(qwen.block(0).find(kto::model::Role::q_b) != nullptr);
  CHECK(qwen.block(0).find(kto::model::Role::o_b) == nullptr);
  CHECK(kto::model::ModelLayout::build(tiny("gpt_neox")).block(0).find(kto::model::Role::down_b) != nullptr);
}

TEST_CASE("a right-padded row gives the same real-position outputs as the row alone", "[model]") {
  for (const std::string arch : {"llama", "gpt_neox"}) {
    const ModelConfig c = tiny(arch);
    const DenseModel m = random_model(c);
    at::NoGradGuard no_grad;
    const at::Tensor ids = random_ids(2, 9, c.vocab_size, 3);
    at::Tensor mask = at::ones_like(ids);
    mask[1].narrow(0, 6, 3).fill_(0);
    const at::Tensor batched = m.forward_hidden(ids, mask);
    const at::Tensor alone = m.forward_hidden(ids[1].narrow(0, 0, 6).unsqueeze(0), {});
    INFO(arch);
    CHECK(at::allclose(batched[1].narrow(0, 0, 6), alone[0], 1e-5, 1e-5));
    CHECK(at::allclose(batched[0], m.forward_hidden(ids[0].unsqueeze(0), {})[0], 1e-5, 1e-5));
    // Masking padded keys explicitly changes nothing at real positions.
    CHECK(at::allclose(m.forward_hidden(ids, mask, true)[1].narrow(0, 0, 6), alone[0], 1e-5, 1e-5));
  }
}

TEST_CASE("left padding masks the padded keys", "[model]") {
  const ModelConfig c = tiny("llama");
  const DenseModel m = random_model(c);
  at::NoGradGuard no_grad;
  const at::Tensor ids = random_ids(1, 8, c.vocab_size, 5);
  at::Tensor mask = at::ones_like(ids);
  mask[0].narrow(0, 0, 3).fill_(0);  // 3 pads first
  const at::Tensor padded = m.forward_hidden(ids, mask);
  REQUIRE_FALSE(at::isnan(padded).any().item<bool>());  // fully masked pad rows stay finite
  // The real tokens see only real keys. Their positions differ (3..7 instead of 0..4), so the
  // outputs are compared with the same tokens preceded by pads whose content is irrelevant.
  at::Tensor other = ids.clone();
  other[0].narrow(0, 0, 3).fill_(0);
  CHECK(
      at::allclose(m.forward_hidden(other, mask)[0].narrow(0, 3, 5), padded[0].narrow(0, 3, 5), 1e-5, 1e-5));
  // Without the mask they would differ.
  CHECK_FALSE(
      at::allclose(m.forward_hidden(other, {})[0].narrow(0, 3, 5), padded[0].narrow(0, 3, 5), 1e-5, 1e-5));
}

TEST_CASE("mistral sliding window: a position ignores keys w or more behind it", "[model]") {
  ModelConfig c = tiny("mistral");
  c.num_hidden_layers = 1;  // one layer: information travels at most w-1 positions
  c.sliding_window = 3;
  const DenseModel m = random_model(c);
  at::NoGradGuard no_grad;
  const at::Tensor ids = random_ids(1, 10, c.vocab_size, 11);
  at::Tensor changed = ids.clone();
  changed[0][2] = (ids[0][2].item<int64_t>() + 1) % c.vocab_size;
  const at::Tensor a = m.forward_hidden(ids, {});
  const at::Tensor b = m.forward_hidden(changed, {});
  // Position 4 sees keys 2..4 (i - j < 3): it changes. Position 5 sees 3..5: it does not.
  CHECK_FALSE(at::allclose(a[0][4], b[0][4], 1e-6, 1e-6));
  CHECK(at::allclose(a[0].narrow(0, 5, 5), b[0].narrow(0, 5, 5), 1e-6, 1e-6));
  // A window at least as long as the sequence is plain causal attention.
  ModelConfig wide = c;
  wide.sliding_window = 10;
  ModelConfig none = c;
  none.sliding_window = 0;
  DenseModel mw(wide, at::kFloat), mn(none, at::kFloat);
  mw.units() = m.units();
  mn.units() = m.units();
  CHECK(at::allclose(mw.forward_hidden(ids, {}), mn.forward_hidden(ids, {}), 1e-6, 1e-6));
}

TEST_CASE("llama3 rope scaling follows the Llama 3.1 frequency rule", "[model]") {
  ModelConfig c = tiny("llama");
  c.head_dim = 128;
  c.hidden_size = 512;
  c.rope_theta = 500000.0;
  c.rope_scaling.type = kto::model::RopeType::llama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  const at::Tensor inv = kto::model::rope_inv_freq(c);
  REQUIRE(inv.size(0) == 64);
  int low = 0, high = 0, medium = 0;
  for (int i = 0; i < 64; ++i) {
    const double base = 1.0 / std::pow(500000.0, 2.0 * i / 128.0);
    const double wavelen = 2 * M_PI / base;
    double expected = base;
    if (wavelen > 8192.0) {
      expected = base / 8.0;
      ++low;
    } else if (wavelen >= 2048.0) {
      const double smooth = (8192.0 / wavelen - 1.0) / 3.0;
      expected = (1 - smooth) * base / 8.0 + smooth * base;
      ++medium;
    } else {
      ++high;
    }
    CHECK(inv[i].item<double>() == Approx(expected).epsilon(1e-12));
  }
  CHECK(low > 0);  // the test covers all three bands
  CHECK(medium > 0);
  CHECK(high > 0);
  c.rope_scaling.type = kto::model::RopeType::linear;
  c.rope_scaling.factor = 4.0;
  CHECK(kto::model::rope_inv_freq(c)[5].item<double>() ==
        Approx(1.0 / std::pow(500000.0, 10.0 / 128.0) / 4.0));
}

TEST_CASE("chunked token log-probs equal log_softmax, values and gradients", "[model][logprob]") {
  at::Generator gen = at::detail::createCPUGenerator(17);
  for (at::ScalarType dtype : {at::kFloat, at::kDouble}) {
    const at::Tensor hidden0 = at::randn({23, 16}, gen, at::kDouble).to(dtype);
    const at::Tensor head0 = at::randn({37, 16}, gen, at::kDouble).to(dtype);
    const at::Tensor targets = at::randint(37, {23}, gen, at::kLong);
    const at::Tensor weights = at::randn({23}, gen, at::kDouble).to(dtype);

    const at::Tensor h_ref = hidden0.clone().requires_grad_(true);
    const at::Tensor w_ref = head0.clone().requires_grad_(true);
    const at::Tensor expected =
        at::log_softmax(at::matmul(h_ref, w_ref.t()), -1).gather(1, targets.unsqueeze(1)).squeeze(1);
    (expected * weights).sum().backward();

    for (int64_t chunk : {1, 5, 23, 100}) {
      const at::Tensor h = hidden0.clone().requires_grad_(true);
      const at::Tensor w = head0.clone().requires_grad_(true);
      const at::Tensor got = kto::model::token_logprobs(h, w, targets, chunk);
      (got * weights.to(got.scalar_type())).sum().backward();
      const double tol = dtype == at::kDouble ? 1e-12 : 1e-5;
      INFO(c10::toString(dtype) << " chunk " << chunk);
      CHECK(at::allclose(got.to(dtype), expected.detach(), tol, tol));
      CHECK(at::allclose(h.grad(), h_ref.grad(), tol, tol));
      CHECK(at::allclose(w.grad(), w_ref.grad(), tol, tol));
    }
  }
}

TEST_CASE("sequence log-prob sums count only selected tokens", "[model][logprob]") {
  const ModelConfig c = tiny("qwen2");
  const DenseModel m = random_model(c);
  at::NoGradGuard no_grad;
  const at::Tensor ids = random_ids(3, 7, c.vocab_size, 2);
  at::Tensor loss_mask = at::zeros_like(ids);
  loss_mask[0].narrow(0, 4, 3).fill_(1);
  loss_mask[2].narrow(0, 0, 7).fill_(1);  // position 0 has no predecessor: ignored
  const auto sel = kto::model::select_tokens(ids, loss_mask);
  CHECK(sel.rows.size(0) == 3 + 6);
  const at::Tensor hidden = m.forward_hidden(ids, {});
  const at::Tensor sums = kto::model::sequence_logprob_sums(hidden, m.lm_head(), sel, 2);
  const at::Tensor lsm = at::log_softmax(at::matmul(hidden, m.lm_head().t()), -1);
  auto lp = [&](int b, int t) { return lsm[b][t - 1][ids[b][t].item<int64_t>()].item<double>(); };
  CHECK(sums[0].item<double>() == Approx(lp(0, 4) + lp(0, 5) + lp(0, 6)).epsilon(1e-5));
  CHECK(sums[1].item<double>() == 0.0);
  double row2 = 0;
  for (int t = 1; t < 7; ++t) row2 += lp(2, t);
  CHECK(sums[2].item<double>() == Approx(row2).epsilon(1e-5));
}

TEST_CASE("bf16 forward tracks fp32", "[model][bf16]") {
  for (const std::string arch : {"llama", "gpt_neox"}) {
    const ModelConfig c = tiny(arch);
    const DenseModel m32 = random_model(c);
    const DenseModel m16 = m32.to(at::kBFloat16);
    at::NoGradGuard no_grad;
    const at::Tensor ids = random_ids(2, 12, c.vocab_size, 4);
    const at::Tensor h32 = m32.forward_hidden(ids, {});
    const at::Tensor h16 = m16.forward_hidden(ids, {});
    CHECK(h16.scalar_type() == at::kBFloat16);
    const double rel = ((h16.to(at::kFloat) - h32).norm() / h32.norm()).item<double>();
    INFO(arch << " relative error " << rel);
    CHECK(rel < 0.03);  // bf16 keeps 8 bits of mantissa: ~0.4% per op
    CHECK(rel > 0.0);   // and it did run in bf16
  }
}

TEST_CASE("random init is deterministic and dtype-independent", "[model]") {
  const ModelConfig c = tiny("llama");
  const DenseModel a = random_model(c, at::kFloat, 5);
  const DenseModel b = random_model(c, at::kFloat, 5);
  const DenseModel other = random_model(c, at::kFloat, 6);
  const DenseModel d = random_model(c, at::kDouble, 5);
  for (size_t u = 0; u < a.units().size(); ++u) {
    CHECK(at::equal(a.units()[u], b.units()[u]));
    CHECK(at::equal(d.units()[u].to(at::kFloat), a.units()[u]));
  }
  CHECK_FALSE(at::equal(a.units()[1], other.units()[1]));
  CHECK(at::equal(a.param("model.layers.0.input_layernorm.weight"), at::ones({c.hidden_size})));
  CHECK_THROWS_AS(a.param("model.layers.9.input_layernorm.weight"), kto::Error);
}

TEST_CASE("a tied head is the embedding matrix itself", "[model]") {
  ModelConfig c = tiny("qwen2");
  c.tie_word_embeddings = true;
  const DenseModel m = random_model(c);
  CHECK(m.lm_head().data_ptr() == m.param("model.embed_tokens.weight").data_ptr());
}

TEST_CASE("HF export then import restores the model exactly, sharded or not", "[model][io]") {
  kto::test::TempDir dir;
  for (const std::string arch : {"llama", "mistral", "qwen2", "gpt_neox"}) {
    ModelConfig c = tiny(arch);
    c.tie_word_embeddings = arch == "qwen2";
    if (arch == "llama") {
      c.rope_scaling.type = kto::model::RopeType::llama3;
      c.rope_scaling.factor = 8;
      c.eos_token_id = 2;
    }
    if (arch == "mistral") c.sliding_window = 5;
    const DenseModel m = random_model(c);
    for (int64_t shard_bytes : {int64_t{1} << 30, int64_t{20000}}) {
      const std::string out = dir.file(arch + std::to_string(shard_bytes));
      kto::io::save_hf_model(out, m.config(), m.layout(), m.units(), at::kFloat, "", shard_bytes);
      const DenseModel back = kto::io::load_hf_model(out, at::kFloat);
      INFO(arch << " shard bytes " << shard_bytes);
      CHECK(back.config().num_parameters() == c.num_parameters());
      CHECK(back.config().rope_scaling.type == c.rope_scaling.type);
      CHECK(back.config().sliding_window == c.sliding_window);
      CHECK(back.config().tie_word_embeddings == c.tie_word_embeddings);
      CHECK(back.config().parallel_residual == c.parallel_residual);
      CHECK(back.config().partial_rotary_factor == c.partial_rotary_factor);
      for (size_t u = 0; u < m.units().size(); ++u) CHECK(at::equal(back.units()[u], m.units()[u]));
    }
  }
}

TEST_CASE("ranged unit reads return the slice and zero padding past the end", "[model][io]") {
  kto::test::TempDir dir;
  const DenseModel m = random_model(tiny("gpt_neox"));
  kto::io::save_hf_model(dir.path(), m.config(), m.layout(), m.units(), at::kFloat);
  const auto weights = kto::io::SafetensorsSet::open_dir(dir.path());
  const auto& unit = m.layout().block(1);
  // A window that straddles parameter boundaries, then one that runs into the padding.
  for (int64_t begin : {int64_t{1000}, unit.numel - 50}) {
    at::Tensor out = at::full({100}, -7.0, at::kDouble);
    kto::io::read_unit_range(weights, unit, begin, out);
    const int64_t real = std::min<int64_t>(100, unit.numel - begin);
    CHECK(at::equal(out.narrow(0, 0, real).to(at::kFloat), m.units()[2].narrow(0, begin, real)));
    if (real < 100) CHECK(out.narrow(0, real, 100 - real).abs().sum().item<double>() == 0.0);
  }
}

TEST_CASE("loading rejects weights that do not match config.json", "[model][io]") {
  kto::test::TempDir dir;
  const DenseModel m = random_model(tiny("llama"));
  kto::io::save_hf_model(dir.path(), m.config(), m.layout(), m.units(), at::kFloat);
  ModelConfig wider = m.config();
  wider.intermediate_size = 64;
  const std::string config_text = kto::model::hf_config_json(wider, "float32");
  kto::test::write_bytes(dir.file("config.json"), config_text);
  CHECK_THROWS_WITH(kto::io::load_hf_model(dir.path(), at::kFloat),
                    Catch::Contains("model.layers.0.mlp.gate_proj.weight") && Catch::Contains("shape"));
  ModelConfig deeper = m.config();
  deeper.num_hidden_layers = 3;
  kto::test::write_bytes(dir.file("config.json"), kto::model::hf_config_json(deeper, "float32"));
  CHECK_THROWS_WITH(kto::io::load_hf_model(dir.path(), at::kFloat),
                    Catch::Contains("missing tensor 'model.layers.2.input_layernorm.weight'"));
  ModelConfig shallower = m.config();
  shallower.num_hidden_layers = 1;
  kto::test::write_bytes(dir.file("config.json"), kto::model::hf_config_json(shallower, "float32"));
  CHECK_THROWS_WITH(kto::io::load_hf_model(dir.path(), at::kFloat),
                    Catch::Contains("does not have") && Catch::Contains("model.layers.1."));
}

TEST_CASE("the caching CPU allocator reuses freed blocks of a size, and results do not depend on it",
          "[model]") {
  if (!kto::model::install_caching_cpu_allocator()) kto::test::skip_test("KTO_CPU_ALLOCATOR=system");
  const int64_t n = int64_t{1} << 18;  // 1 MiB of fp32: cached
  at::Tensor a = at::full({n}, NAN);
  const void* block = a.data_ptr();
  a.reset();  // freed: kept in the cache, stale NaNs and all
  const auto before = kto::model::cpu_cache_stats();
  CHECK(before.cached_bytes >= n * 4);
  at::Tensor b = at::zeros({n});
  CHECK(b.data_ptr() == block);  // the same block again
  CHECK(b.eq(0).all().item<bool>());
  const auto after = kto::model::cpu_cache_stats();
  CHECK(after.hits == before.hits + 1);
  // Small blocks are glibc's: neither hit nor miss.
  at::Tensor small = at::ones({16});
  CHECK(kto::model::cpu_cache_stats().hits == after.hits);
  CHECK(kto::model::cpu_cache_stats().misses == after.misses);
  // The same product twice, the second into recycled (stale) memory: equal bit for bit.
  const at::Tensor x = at::randn({300, 200}), y = at::randn({200, 400});
  const at::Tensor first = at::matmul(x, y);
  at::Tensor scratch = at::full({300, 400}, NAN);
  scratch.reset();
  CHECK(at::equal(at::matmul(x, y), first));
}
