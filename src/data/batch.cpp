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
  }
  return i;
}

BatchOptions batch_options(const DataOptions& data, const Dataset& dataset, bool kl_pass) {
  const DatasetAttributes& a = dataset.attributes();
  BatchOptions o;
  o.pairing = data.pairing;
  o.pad_id = a.pad_id >= 0 ? a.pad_id : (a.eos_id >= 0 ? a.eos_id : 0);
  o.max_length = a.max_length;
  o.pad_to_multiple_of = data.pad_to_multiple_of;
  o.with_reference_logps = dataset.has_reference_logps();
  o.build_kl = kl_pass && !dataset.paired();
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
  return b;
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
    mb.ref_logp = at::empty({n}, at::kFloat);
    mb.ref_kl_logp = at::empty({n}, at::kFloat);
    for (int64_t i = 0; i < n; ++i) {
      mb.ref_logp[i] = examples[static_cast<size_t>(i)].ref_logp;
      mb.ref_kl_logp[i] = examples[static_cast<size_t>(i)].ref_kl_logp;
    }
  }
  mb.target = pad_sequences(target, o);
  if (o.build_kl) mb.kl = pad_sequences(kl, o);
  return mb;
}

}  // namespace kto::data
