// Text generation from a dense model (kto-ckpt generate, eval samples): batched, with a KV cache.
//
// The batch is packed (packing.h): every sequence is its own group, so prompts of any lengths
// run together with no padding at all. The prompts run once (prefill), leaving each block's keys
// and values in a per-sequence cache; every decoding step then runs one new token per sequence
// as a continuation of its cached prefix (the same per-group attention, positions and
// sliding-window masks as training's shared prompts), appending its keys and values.
//
//   model::GenerateOptions o;
//   o.max_new_tokens = 64;
//   o.sampling.greedy = true;
//   std::vector<model::Generation> out = model::generate(dense, {{1, 5, 9}, {1, 7}}, o);
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kto/model/dense_model.h"

namespace kto::model {

struct SamplingOptions {
  bool greedy = false;       // argmax (the first on ties); the others are then unused
  double temperature = 1.0;  // > 0: logits are divided by it
  int64_t top_k = 0;         // keep the k most likely tokens (0: all)
  double top_p = 1.0;        // then the fewest most likely tokens whose probability reaches p, (0, 1]
  // Throws kto::Error naming the option for values outside those ranges.
  void validate() const;
};

// The distribution the next token is drawn from, fp64 [V]: softmax(logits / temperature),
// restricted to the top_k most likely tokens, then to the smallest set of most likely tokens
// whose total probability is at least top_p (tokens tied in probability are taken in id order),
// renormalised. Greedy: all mass on the argmax.
at::Tensor sampling_distribution(const at::Tensor& logits_V, const SamplingOptions& options);
// A token drawn from sampling_distribution with `generator` (the argmax when greedy).
int64_t next_token(const at::Tensor& logits_V, const SamplingOptions& options, at::Generator& generator);

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  int64_t eos_id = -1;  // generating it ends a sequence ("eos"); -1: never
  SamplingOptions sampling;
  // Sequence i draws from its own generator seeded with (seed, first_index + i): its tokens do
  // not depend on which other sequences share its batch (a caller cutting prompts into batches
  // passes each batch's first prompt number).
  uint64_t seed = 0;
  int64_t first_index = 0;
  // false: no cache; every step recomputes each whole sequence (the check of the cached path,
  // and what the benchmark compares it with).
  bool kv_cache = true;
  // Called after each new token of sequence i with its new tokens so far; true ends it ("stop").
  std::function<bool(size_t index, const std::vector<int64_t>& generated)> stop;
};

struct Generation {
  std::vector<int64_t> ids;   // the new tokens only (an ending EOS included)
  std::string finish_reason;  // "eos", "stop", or "length" (max_new_tokens, or the model's
                              // max_position_embeddings reached)
};

// Generates a continuation of every prompt (non-empty token ids, in the vocabulary), in order.
std::vector<Generation> generate(const DenseModel& model, const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& options);

}  // namespace kto::model
