// Microbatch assembly: the token tensors of the policy/reference pass and of the KL pass on
// mismatched pairs (DESIGN §3, §7), right-padded or packed (data.layout, model/packing.h).
//
// Sequence i of the target batch is prompt_i + completion_i; sequence i of the KL batch is
// prompt_i + completion_j with j = (i + 1) mod n ("next", the paper's code) or (i - 1) mod n
// ("prev", TRL). A KL sequence longer than max_length keeps its prompt and loses the end of the
// borrowed completion; if nothing of it is left the sequence has no selected token and its KL
// term is exactly 0 (the `halos` z0 estimator excludes those). Everything is built on the host (CPU tensors),
// including the token selections, so the device never syncs for batch bookkeeping.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kto/data/dataset.h"
#include "kto/data/options.h"
#include "kto/model/logprob.h"
#include "kto/model/packing.h"

namespace kto::data {

// The KL partner j of example i in a microbatch of n (kto/data/options.h: Pairing).
int64_t paired_index(Pairing pairing, int64_t i, int64_t n);

struct TokenBatch {
  at::Tensor input_ids;       // padded: [B, T] int64, right-padded with pad_id; packed: [1, N]
  at::Tensor attention_mask;  // padded: [B, T] int64, 1 = token; packed: undefined
  at::Tensor loss_mask;       // padded: [B, T] int64, 1 = completion token; packed: undefined
  std::shared_ptr<const model::PackedLayout> packed;  // packed: the stream's groups
  model::TokenSelection selection;                    // completion tokens, for sequence_logprob_sums
  at::Tensor completion_tokens;                       // [B] int64: each sequence's completion length
  int64_t num_tokens = 0;                             // tokens of the sequences (prompt + completion each)
  int64_t positions = 0;        // positions the forward computes (B * T padded, N packed)
  int64_t real_positions = 0;   // of those, the ones that are not padding
  int64_t attention_pairs = 0;  // (query, key) score products the forward computes per layer
                                // and head (padded: B * T * T; packed: each group's tile)
  bool defined() const { return input_ids.defined(); }
};

struct Microbatch {
  TokenBatch target;
  TokenBatch kl;
  at::Tensor desirable;    // [B] bool
  at::Tensor ref_logp;     // [B] float64, when the run uses the dataset's reference scores
  at::Tensor ref_kl_logp;  // [B] float64, idem (its KL partners' scores; 0 without)
  std::vector<int64_t> example_ids;
  bool paired = false;  // rows [0, n/2) are chosen completions, [n/2, n) their rejected ones
  int64_t size() const { return static_cast<int64_t>(example_ids.size()); }
};

struct BatchOptions {
  Pairing pairing = Pairing::next;
  int64_t pad_id = 0;              // batch_options() takes the dataset's
  int64_t max_length = 0;          // 0: no limit on KL sequences
  int64_t pad_to_multiple_of = 1;  // padded: round T up (fewer distinct shapes)
  BatchLayout layout = BatchLayout::padded;
  bool with_reference_logps = false;  // copy the examples' precomputed reference log-probs
  bool build_kl = true;               // the KL batch (only KTO needs it)
  bool paired = false;                // rows [0, n/2) chosen, [n/2, n) their rejected (Microbatch::paired)
};

// The batch options of a run on `dataset`, derived in this one place: pairing, layout and
// padding multiple from `data`; pad id (the dataset's pad id, else its eos id, else 0) and
// max_length from the dataset; the dataset's reference scores when `use_scores` (the run uses
// precomputed scores); a KL batch when the loss needs one and the data is unpaired.
BatchOptions batch_options(const DataOptions& data, const Dataset& dataset, bool kl_pass, bool use_scores);

// Throws kto::Error for a microbatch of fewer than 2 examples when a KL batch is built (no
// mismatched pair exists). KL partners come from `options.pairing` within `examples`.
Microbatch assemble_microbatch(const std::vector<Example>& examples, const BatchOptions& options);
// Same, with the KL partner of each example given: sequence i of the KL batch is the prompt of
// examples[i] with the completion of kl_partners[i] (pairing across ranks).
Microbatch assemble_microbatch(const std::vector<Example>& examples, const std::vector<Example>& kl_partners,
                               const BatchOptions& options);

}  // namespace kto::data
