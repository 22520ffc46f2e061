#include "kto/model/generate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "kto/model/blocks.h"
#include "kto/model/forward.h"
#include "kto/model/logprob.h"
#include "kto/model/packing.h"
#include "kto/util/check.h"

namespace kto::model {

using detail::str_cat;

void SamplingOptions::validate() const {
  if (greedy) return;
  if (!(temperature > 0 && temperature <= 1e4))
    throw Error(str_cat("temperature must be in (0, 1e4], got ", temperature, " (use greedy for argmax)"));
  if (top_k < 0) throw Error(str_cat("top_k must be >= 0 (0: all tokens), got ", top_k));
  if (!(top_p > 0 && top_p <= 1)) throw Error(str_cat("top_p must be in (0, 1], got ", top_p));
}

at::Tensor sampling_distribution(const at::Tensor& logits_V, const SamplingOptions& o) {
  o.validate();
  const at::Tensor logits = logits_V.detach().to(at::kDouble).reshape({-1}).cpu();
  const int64_t V = logits.numel();
  KTO_CHECK(V > 0, "sampling from an empty distribution");
  at::Tensor out = at::zeros({V}, at::kDouble);
  if (o.greedy) {
    out[logits.argmax().item<int64_t>()] = 1.0;  // the first maximum
    return out;
  }
  const at::Tensor p = at::softmax(logits / o.temperature, 0);
  // Most likely first; equal probabilities in id order (a stable sort).
  const auto sorted = at::sort(p, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  const at::Tensor& probs = std::get<0>(sorted);
  const at::Tensor& ids = std::get<1>(sorted);
  const int64_t k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  const at::Tensor top = probs.narrow(0, 0, k);
  const at::Tensor cumulative = top.cumsum(0) / top.sum();  // within the top k, renormalised
  // The fewest tokens whose probability reaches top_p: those before the first cumulative >= p, and it.
  const int64_t n = std::min(k, 1 + cumulative.lt(o.top_p).sum().item<int64_t>());
  const at::Tensor kept = top.narrow(0, 0, n);
  out.index_put_({ids.narrow(0, 0, n)}, kept / kept.sum());
  return out;
}

int64_t next_token(const at::Tensor& logits_V, const SamplingOptions& o, at::Generator& generator) {
  if (o.greedy) return logits_V.detach().reshape({-1}).argmax().item<int64_t>();
  const at::Tensor dist = sampling_distribution(logits_V, o);
  return at::multinomial(dist, 1, /*replacement=*/false, generator).item<int64_t>();
}

namespace {

// The buffers unit u binds, from a dense model.
std::vector<at::Tensor> flats_of(const DenseModel& m, size_t u) {
  std::vector<at::Tensor> f;
  for (size_t w : m.layout().weight_units(u)) f.push_back(m.units()[w]);
  return f;
}

struct Sequence {
  std::vector<int64_t> tokens;  // prompt, then generated
  int64_t prompt = 0, limit = 0;
  Generation out;
  at::Generator generator;
  bool active() const { return out.finish_reason.empty(); }
};

// Appends token `t` to s and decides whether s ends.
void accept(Sequence& s, size_t index, int64_t t, const GenerateOptions& o) {
  s.tokens.push_back(t);
  s.out.ids.push_back(t);
  if (o.eos_id >= 0 && t == o.eos_id) {
    s.out.finish_reason = "eos";
  } else if (o.stop && o.stop(index, s.out.ids)) {
    s.out.finish_reason = "stop";
  } else if (static_cast<int64_t>(s.out.ids.size()) >= s.limit) {
    s.out.finish_reason = "length";
  }
}

// The next token of each sequence in `rows`, from the final-normed hidden states of their last
// positions [n, C]: logits as kto-ckpt forward computes them (chunked_logits, the model dtype).
void sample_rows(const DenseModel& m, std::vector<Sequence>& seqs, const std::vector<size_t>& rows,
                 const at::Tensor& hidden_NC, const GenerateOptions& o) {
  const at::Tensor logits = chunked_logits(hidden_NC, m.lm_head()).cpu();
  for (size_t j = 0; j < rows.size(); ++j)
    accept(seqs[rows[j]], rows[j],
           next_token(logits[static_cast<int64_t>(j)], o.sampling, seqs[rows[j]].generator), o);
}

void generate_cached(const DenseModel& m, std::vector<Sequence>& seqs, const GenerateOptions& o) {
  const ModelConfig& c = m.config();
  const ModelLayout& layout = m.layout();
  const at::TensorOptions opts = m.units().front().options();
  // Each sequence's cache slots: [offset, offset + prompt + limit) of every block's keys/values.
  std::vector<int64_t> offset(seqs.size(), 0), cached(seqs.size(), 0);
  int64_t total = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    offset[i] = total;
    total += seqs[i].prompt + seqs[i].limit;
  }
  std::vector<BlockKV> cache(layout.units.size());
  for (size_t u = 0; u < layout.units.size(); ++u) {
    if (layout.units[u].kind != UnitKind::block) continue;
    cache[u] = {at::zeros({1, c.kv_heads(), total, c.head_size()}, opts),
                at::zeros({1, c.kv_heads(), total, c.head_size()}, opts)};
  }
  bool prefill = true;
  for (;;) {
    // This step's tokens: whole prompts first, then the last token of every active sequence.
    std::vector<size_t> rows;
    std::vector<int64_t> ids;
    PackedLayout packed;
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (!seqs[i].active()) continue;
      PackedGroup g;
      g.start = static_cast<int64_t>(ids.size());
      if (prefill) {
        g.trunk = seqs[i].prompt;
        ids.insert(ids.end(), seqs[i].tokens.begin(), seqs[i].tokens.end());
      } else {
        g.trunk = 1;
        g.prefix_start = offset[i];
        g.prefix_length = cached[i];
        ids.push_back(seqs[i].tokens.back());
      }
      packed.groups.push_back(g);
      rows.push_back(i);
    }
    if (rows.empty()) return;
    packed.tokens = static_cast<int64_t>(ids.size());
    ForwardContext context;
    context.attention = make_packed_attention_inputs(c, packed, m.dtype(), opts.device());
    at::Tensor x = at::tensor(ids, at::kLong).view({1, -1}).to(opts.device());
    for (size_t u = 0; u < layout.units.size(); ++u) {
      if (layout.units[u].kind != UnitKind::block) {
        x = unit_forward(c, layout, u, flats_of(m, u), x, context);
        continue;
      }
      BlockKV fresh;
      x = unit_forward(c, layout, u, flats_of(m, u), x, context, prefill ? nullptr : &cache[u], &fresh);
      for (size_t j = 0; j < rows.size(); ++j) {  // append this step's keys and values
        const PackedGroup& g = packed.groups[j];
        const int64_t at_slot = offset[rows[j]] + cached[rows[j]];
        cache[u].k.narrow(2, at_slot, g.trunk).copy_(fresh.k.narrow(2, g.start, g.trunk));
        cache[u].v.narrow(2, at_slot, g.trunk).copy_(fresh.v.narrow(2, g.start, g.trunk));
      }
    }
    std::vector<int64_t> last;
    for (size_t j = 0; j < rows.size(); ++j) {
      const PackedGroup& g = packed.groups[j];
      last.push_back(g.start + g.trunk - 1);
      cached[rows[j]] += g.trunk;
    }
    const at::Tensor hidden = x.squeeze(0).index_select(0, at::tensor(last, at::kLong).to(opts.device()));
    sample_rows(m, seqs, rows, hidden, o);
    prefill = false;
  }
}

void generate_uncached(const DenseModel& m, std::vector<Sequence>& seqs, const GenerateOptions& o) {
  for (size_t i = 0; i < seqs.size(); ++i) {
    while (seqs[i].active()) {
      const at::Tensor ids = at::tensor(seqs[i].tokens, at::kLong).view({1, -1});
      const at::Tensor hidden = m.forward_hidden(ids, {});  // the whole sequence, plain causal
      sample_rows(m, seqs, {i}, hidden[0].narrow(0, ids.size(1) - 1, 1), o);
    }
  }
}

}  // namespace

std::vector<Generation> generate(const DenseModel& m, const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& o) {
  o.sampling.validate();
  KTO_CHECK(o.max_new_tokens >= 0, "max_new_tokens must be >= 0, got ", o.max_new_tokens);
  const ModelConfig& c = m.config();
  at::NoGradGuard no_grad;
  std::vector<Sequence> seqs(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    Sequence& s = seqs[i];
    s.tokens = prompts[i];
    s.prompt = static_cast<int64_t>(prompts[i].size());
    if (s.prompt == 0) throw Error(str_cat("prompt ", i + 1, " has no tokens"));
    for (int64_t t : prompts[i]) {
      if (t < 0 || t >= c.vocab_size)
        throw Error(str_cat("prompt ", i + 1, ": token id ", t, " is outside the vocabulary [0, ",
                            c.vocab_size, ")"));
    }
    if (s.prompt > c.max_position_embeddings) {
      throw Error(str_cat("prompt ", i + 1, " has ", s.prompt, " tokens, more than the model's ",
                          "max_position_embeddings (", c.max_position_embeddings, ")"));
    }
    s.limit = std::min(o.max_new_tokens, c.max_position_embeddings - s.prompt);
    // splitmix64 of (seed, i): independent streams per sequence.
    uint64_t z = o.seed + 0x9E3779B97F4A7C15ULL * (static_cast<uint64_t>(o.first_index) + i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    s.generator = at::detail::createCPUGenerator(z ^ (z >> 31));
    if (s.limit == 0) s.out.finish_reason = "length";
  }
  if (o.kv_cache) {
    generate_cached(m, seqs, o);
  } else {
    generate_uncached(m, seqs, o);
  }
  std::vector<Generation> out;
  for (Sequence& s : seqs) out.push_back(std::move(s.out));
  return out;
}

}  // namespace kto::model
