// The data pipeline's options: the `data` section of a kto config (STYLE 9). Light on purpose
// (no ATen, no HDF5): the config parser includes it; the loader and batches read it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kto/util/choice.h"

namespace kto::data {

// Which completion j is paired with prompt i in a microbatch of n for the KL pass: next
// j = (i + 1) mod n (HALOs, OpenRLHF), prev j = (i - 1) mod n (TRL >= 0.9), reverse j = n - 1 - i
// (TRL <= 0.8); or `fixed`: each example's partner chosen once for the whole dataset
// (kto/data/partners.h), as stored in the data (/kl_partner) or drawn from data.seed — what
// precomputed reference scores are computed with.
enum class Pairing { next, prev, reverse, fixed };
inline constexpr ChoiceTable<Pairing, 4> kPairings{{{Pairing::next, "next"},
                                                    {Pairing::prev, "prev"},
                                                    {Pairing::reverse, "reverse"},
                                                    {Pairing::fixed, "fixed"}}};

// Where a KL partner may come from: `rank` pairs within each rank's microbatch (TRL, HALOs);
// `global` pairs within the global microbatch across ranks, so the KL terms — and z0 — do not
// depend on the world size (a rank reads its partners' examples directly).
enum class PairScope { global, rank };
inline constexpr ChoiceTable<PairScope, 2> kPairScopes{
    {{PairScope::global, "global"}, {PairScope::rank, "rank"}}};

// How a microbatch's sequences are laid out for the forwards (docs/training.md): `padded`
// rows right-padded to the longest; `packed` back to back in one row, attention within each
// sequence; `shared_prompts` packed, and each prompt computed once per model — the KL batch's
// completions continue the target batch's prompts, a pair's chosen and rejected share theirs.
// All three give the same log-probs up to rounding.
enum class BatchLayout { padded, packed, shared_prompts };
inline constexpr ChoiceTable<BatchLayout, 3> kBatchLayouts{{{BatchLayout::padded, "padded"},
                                                            {BatchLayout::packed, "packed"},
                                                            {BatchLayout::shared_prompts, "shared_prompts"}}};

struct DataOptions {
  std::vector<std::string> train;  // HDF5 files from kto-data prepare
  std::vector<std::string> eval;
  int64_t micro_batch = 4;   // examples (pairs for paired losses) per rank per forward
  int64_t global_batch = 0;  // 0: micro_batch * grad_accum * world size
  int64_t grad_accum = 1;
  int64_t seed = 0;
  Pairing pairing = Pairing::next;
  PairScope pair_scope = PairScope::global;
  int64_t pad_to_multiple_of = 8;
  BatchLayout layout = BatchLayout::shared_prompts;
  bool group_by_length = false;
  int64_t group_microbatches = 64;
  bool allow_tokenizer_mismatch = false;

  template <class V>
  void visit(V& v) {
    v.field("train", train, "training dataset files (kto-data prepare output; several shards allowed)");
    v.field("eval", eval, "held-out dataset files (empty: no eval)");
    v.field("micro_batch", micro_batch,
            "examples per rank per forward pass (pairs for paired losses); KTO needs >= 2");
    v.field("global_batch", global_batch,
            "examples (pairs for paired losses) per optimizer step over all ranks; 0: micro_batch * "
            "grad_accum * world size");
    v.field("grad_accum", grad_accum,
            "microbatches per optimizer step (derived from global_batch when that is set)");
    v.field("seed", seed, "seed of the per-epoch shuffles");
    v.choice(
        "pairing", pairing, kPairings,
        "KL mismatched pairs: the completion of (i+1), (i-1) or (n-1-i) in the microbatch, or fixed: one "
        "partner per example for the whole dataset (the data's /kl_partner, else drawn from seed)");
    v.choice("pair_scope", pair_scope, kPairScopes,
             "pair within the global microbatch (world-size invariant) or within each rank's (TRL, HALOs)");
    v.field("pad_to_multiple_of", pad_to_multiple_of,
            "layout padded: round sequence lengths up to a multiple of this");
    v.choice("layout", layout, kBatchLayouts,
             "how a microbatch is laid out: shared_prompts (packed, each prompt computed once per model), "
             "packed (no padding) or padded (rows right-padded to the longest)");
    v.field("group_by_length", group_by_length,
            "order each epoch so that every microbatch holds examples of similar length (less "
            "padding): windows of the shuffled order sorted by length, their microbatches shuffled");
    v.field("group_microbatches", group_microbatches,
            "group_by_length: microbatches per window sorted together (larger: less padding, less "
            "mixing of lengths within a step)");
    v.field("allow_tokenizer_mismatch", allow_tokenizer_mismatch,
            "train although the eval files or the model directory's tokenizer differ from the training "
            "data's tokenizer (sha256); only for an intended mix");
  }
  // Throws kto::ConfigError naming `source` and the key (`prefix` + key, e.g. "data.micro_batch").
  void validate(const std::string& source, const std::string& prefix) const;
};

}  // namespace kto::data
