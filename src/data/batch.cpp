#include "kto/data/batch.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "kto/util/check.h"

namespace kto::data {

using detail::str_cat;

int64_t paired_index(Pairing pairing, int64_t i, int64_t n) {
  switch (pairing) {
    case Pairing::next: return (i + 1) % n;
    case Pairing::prev: return (i + n - 1) % n;
    case Pairing::reverse: return n - 1 - i;
    case Pairing::fixed: break;  // partners from the dataset's table (partners.h), not the microbatch
  }
  throw Error("paired_index: pairing fixed has no in-batch partner");
}

BatchOptions batch_options(const DataOptions& data, const Dataset& dataset, bool kl_pass, bool use_scores) {
  const DatasetAttributes& a = dataset.attributes();
  BatchOptions o;
  o.pairing = data.pairing;
  o.pad_id = a.pad_id >= 0 ? a.pad_id : (a.eos_id >= 0 ? a.eos_id : 0);
  o.max_length = a.max_length;
  o.pad_to_multiple_of = data.pad_to_multiple_of;
  o.layout = data.layout;
  o.with_reference_logps = use_scores && dataset.has_reference_logps();
  o.build_kl = kl_pass && !dataset.paired();
  o.paired = dataset.paired();
  return o;
}

namespace {

struct Sequence {
  const int32_t* prompt;
  int64_t prompt_len;
  const int32_t* completion;
  int64_t completion_len;
};

TokenBatch pad_sequences(const std::vector<Sequence>& seqs, const BatchOptions& o) {
  const int64_t B = static_cast<int64_t>(seqs.size());
  int64_t T = 1;
  for (const Sequence& s : seqs) T = std::max(T, s.prompt_len + s.completion_len);
  T = (T + o.pad_to_multiple_of - 1) / o.pad_to_multiple_of * o.pad_to_multiple_of;
  TokenBatch b;
  b.input_ids = at::full({B, T}, std::max<int64_t>(o.pad_id, 0), at::kLong);
  b.attention_mask = at::zeros({B, T}, at::kLong);
  b.loss_mask = at::zeros({B, T}, at::kLong);
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto att = b.attention_mask.accessor<int64_t, 2>();
  auto loss = b.loss_mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < B; ++i) {
    const Sequence& s = seqs[static_cast<size_t>(i)];
    for (int64_t t = 0; t < s.prompt_len; ++t) {
      ids[i][t] = s.prompt[t];
      att[i][t] = 1;
    }
    for (int64_t t = 0; t < s.completion_len; ++t) {
      ids[i][s.prompt_len + t] = s.completion[t];
      att[i][s.prompt_len + t] = 1;
      loss[i][s.prompt_len + t] = 1;
    }
    b.num_tokens += s.prompt_len + s.completion_len;
  }
  b.selection = model::select_tokens(b.input_ids, b.loss_mask);
  b.completion_tokens = b.loss_mask.sum(1);
  b.positions = B * T;
  b.real_positions = b.num_tokens;
  b.attention_pairs = B * T * T;  // every row's full score tile
  return b;
}

// A packed stream built group by group (model/packing.h), with the selection of each scored
// sequence's completion tokens: a token is scored from the hidden state of the token before it
// in its group (a group's first token has none there: it is position 0, or the last prompt
// token a continuation starts with).
class Packer {
 public:
  explicit Packer(int64_t sequences)
      : completion_(static_cast<size_t>(sequences), 0), sequences_(sequences) {}

  // prompt + completion as one group, scored as sequence `seq`; a continuation of the
  // provider's tokens [prefix_start, prefix_start + prefix_length) when prefix_length > 0.
  // Returns the group's first token in the stream. `real`: tokens it stands for.
  int64_t add_sequence(const Sequence& s, int64_t seq, int64_t real, int64_t prefix_start = 0,
                       int64_t prefix_length = 0) {
    model::PackedGroup g;
    g.start = static_cast<int64_t>(ids_.size());
    g.trunk = s.prompt_len + s.completion_len;
    g.prefix_start = prefix_start;
    g.prefix_length = prefix_length;
    append(s.prompt, s.prompt_len);
    append(s.completion, s.completion_len);
    for (int64_t t = 0; t < s.completion_len; ++t) score(g.start + s.prompt_len + t, g.start, seq);
    completion_[static_cast<size_t>(seq)] += s.completion_len;
    num_tokens_ += real;
    return finish(g);
  }

  // One prompt (at least one token), then each completion as a branch that sees the prompt and
  // itself: completions[i] scored as sequence seqs[i].
  void add_shared(const int32_t* prompt, int64_t prompt_len, const std::vector<Sequence>& completions,
                  const std::vector<int64_t>& seqs) {
    KTO_CHECK(prompt_len >= 1, "a shared prompt needs a token");
    model::PackedGroup g;
    g.start = static_cast<int64_t>(ids_.size());
    g.trunk = prompt_len;
    append(prompt, prompt_len);
    for (size_t i = 0; i < completions.size(); ++i) {
      const Sequence& c = completions[i];
      if (c.completion_len == 0) continue;  // an empty branch: nothing to score
      const int64_t first = static_cast<int64_t>(ids_.size());
      append(c.completion, c.completion_len);
      g.branches.push_back(c.completion_len);
      for (int64_t t = 0; t < c.completion_len; ++t)
        score(first + t, t == 0 ? g.start + prompt_len : first, seqs[i],
              t == 0 ? g.start + prompt_len - 1 : -1);
      completion_[static_cast<size_t>(seqs[i])] += c.completion_len;
      num_tokens_ += prompt_len + c.completion_len;
    }
    finish(g);
  }

  TokenBatch build() {
    if (ids_.empty()) {  // every sequence empty: one unscored token keeps the forward well formed
      model::PackedGroup g;
      g.trunk = 1;
      ids_.push_back(0);
      finish(g);
    }
    const int64_t N = static_cast<int64_t>(ids_.size());
    TokenBatch b;
    b.input_ids = at::tensor(ids_, at::kLong).view({1, N});
    layout_.tokens = N;
    layout_.check();
    b.packed = std::make_shared<const model::PackedLayout>(layout_);
    model::TokenSelection& sel = b.selection;
    sel.rows = at::tensor(rows_, at::kLong);
    sel.targets = at::tensor(targets_, at::kLong);
    sel.seq = at::tensor(seq_, at::kLong);
    sel.batch = sequences_;
    sel.hidden_rows = N;
    b.completion_tokens = at::tensor(completion_, at::kLong);
    b.num_tokens = num_tokens_;
    b.positions = b.real_positions = N;
    b.attention_pairs = pairs_;
    return b;
  }

 private:
  void append(const int32_t* tokens, int64_t n) { ids_.insert(ids_.end(), tokens, tokens + n); }
  // Token `at` of the stream, in a part starting at `part_start`, scored for `seq` from the token
  // before it (or from `from` when given): not when it starts its part without a `from`.
  void score(int64_t at, int64_t part_start, int64_t seq, int64_t from = -1) {
    if (from < 0) {
      if (at == part_start) return;
      from = at - 1;
    }
    rows_.push_back(from);
    targets_.push_back(ids_[static_cast<size_t>(at)]);
    seq_.push_back(seq);
  }
  int64_t finish(const model::PackedGroup& g) {
    const int64_t L = static_cast<int64_t>(ids_.size()) - g.start;
    if (L == 0) return g.start;  // nothing to compute
    pairs_ += L * (g.prefix_length + L);
    layout_.groups.push_back(g);
    return g.start;
  }

  std::vector<int64_t> ids_, rows_, targets_, seq_;
  std::vector<int64_t> completion_;
  model::PackedLayout layout_;
  int64_t sequences_, num_tokens_ = 0, pairs_ = 0;
};

bool same_prompt(const Sequence& a, const Sequence& b) {
  return a.prompt_len == b.prompt_len && std::equal(a.prompt, a.prompt + a.prompt_len, b.prompt);
}

// The target and KL batches packed. With shared prompts, a KL sequence continues its target
// sequence's prompt (it starts with the prompt's last token, to be scored from it, and attends
// the other prompt tokens as the target batch computed them); a pair's chosen and rejected
// completions (rows k and m + k) share one prompt when it is the same.
void pack(const std::vector<Sequence>& target, const std::vector<Sequence>& kl, bool paired, bool shared,
          Microbatch& mb) {
  const int64_t n = static_cast<int64_t>(target.size());
  Packer t(n);
  std::vector<int64_t> start(target.size());
  const int64_t m = paired ? n / 2 : n;
  for (int64_t i = 0; i < m; ++i) {
    const Sequence& a = target[static_cast<size_t>(i)];
    if (paired) {
      const Sequence& r = target[static_cast<size_t>(m + i)];
      if (shared && a.prompt_len >= 1 && same_prompt(a, r)) {
        t.add_shared(a.prompt, a.prompt_len, {a, r}, {i, m + i});
      } else {
        t.add_sequence(a, i, a.prompt_len + a.completion_len);
        t.add_sequence(r, m + i, r.prompt_len + r.completion_len);
      }
      continue;
    }
    start[static_cast<size_t>(i)] = t.add_sequence(a, i, a.prompt_len + a.completion_len);
  }
  mb.target = t.build();
  if (kl.empty()) return;
  Packer k(n);
  for (int64_t i = 0; i < n; ++i) {
    const Sequence& s = kl[static_cast<size_t>(i)];
    const int64_t real = s.prompt_len + s.completion_len;
    if (shared && s.prompt_len >= 1) {
      if (s.completion_len == 0) continue;  // nothing to score: the KL term is 0
      const Sequence rest{s.prompt + s.prompt_len - 1, 1, s.completion, s.completion_len};
      k.add_sequence(rest, i, real, start[static_cast<size_t>(i)], s.prompt_len - 1);
    } else {
      k.add_sequence(s, i, real);
    }
  }
  mb.kl = k.build();
}

}  // namespace

Microbatch assemble_microbatch(const std::vector<Example>& examples, const BatchOptions& o) {
  const int64_t n = static_cast<int64_t>(examples.size());
  if (n < 2 && o.build_kl) {
    throw Error(str_cat("a microbatch of ", n,
                        " example has no mismatched pair for the KL estimate; use micro_batch >= 2"));
  }
  std::vector<Example> partners;
  if (o.build_kl) {
    for (int64_t i = 0; i < n; ++i)
      partners.push_back(examples[static_cast<size_t>(paired_index(o.pairing, i, n))]);
  }
  return assemble_microbatch(examples, partners, o);
}

Microbatch assemble_microbatch(const std::vector<Example>& examples, const std::vector<Example>& partners,
                               const BatchOptions& o) {
  const int64_t n = static_cast<int64_t>(examples.size());
  KTO_CHECK(!o.build_kl || partners.size() == examples.size(), "one KL partner per example");
  std::vector<Sequence> target, kl;
  Microbatch mb;
  mb.paired = o.paired;
  mb.desirable = at::empty({n}, at::kBool);
  for (int64_t i = 0; i < n; ++i) {
    const Example& e = examples[static_cast<size_t>(i)];
    target.push_back({e.tokens.data(), e.prompt_len, e.tokens.data() + e.prompt_len, e.completion_len()});
    if (o.build_kl) {
      const Example& other = partners[static_cast<size_t>(i)];
      int64_t borrowed = other.completion_len();
      if (o.max_length > 0 && e.prompt_len + borrowed > o.max_length) {
        borrowed = std::max<int64_t>(0, o.max_length - e.prompt_len);
      }
      kl.push_back({e.tokens.data(), e.prompt_len, other.tokens.data() + other.prompt_len, borrowed});
    }
    mb.desirable[i] = e.desirable;
    mb.example_ids.push_back(e.index);
  }
  if (o.with_reference_logps) {
    mb.ref_logp = at::empty({n}, at::kDouble);
    mb.ref_kl_logp = at::empty({n}, at::kDouble);
    double* r = mb.ref_logp.data_ptr<double>();
    double* k = mb.ref_kl_logp.data_ptr<double>();
    for (int64_t i = 0; i < n; ++i) {
      r[i] = examples[static_cast<size_t>(i)].ref_logp;
      k[i] = examples[static_cast<size_t>(i)].ref_kl_logp;
    }
  }
  if (o.layout != BatchLayout::padded) {
    pack(target, kl, mb.paired, o.layout == BatchLayout::shared_prompts, mb);
    return mb;
  }
  mb.target = pad_sequences(target, o);
  if (o.build_kl) mb.kl = pad_sequences(kl, o);
  return mb;
}

}  // namespace kto::data
