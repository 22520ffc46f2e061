// Which examples each rank trains on, step by step (DESIGN §7).
//
// The example stream is the concatenation of seeded permutations, one per epoch. A step takes
// the next G = micro_batch x grad_accum x world_size positions of the stream; position j of a
// step goes to accumulation step a, rank r, slot m with j = (a * world + r) * micro + m, so each
// accumulation step's global microbatch is one contiguous run of the stream. Nothing is
// dropped: a batch may straddle two epochs, and each epoch visits every example exactly once.
// The state (epoch, position) is saved with every checkpoint; restoring it reproduces the very
// next batch.
//
// Length grouping (data.group_by_length) reorders each epoch's permutation, nothing else: the
// epoch's positions are cut into runs of micro_batch aligned with the microbatches of the stream
// (a rank's microbatch is one run, whatever the epoch's offset), G consecutive runs form a
// window, a window's examples are sorted by length (longest first, ties in permutation order)
// and cut into runs again, and the window's full runs are shuffled (seeded by seed, epoch and
// window; a partial run at the epoch's end stays last). So every microbatch holds examples of
// similar length, every example comes once per epoch, the order depends on the seed, the
// lengths, micro_batch and G but not on the world size, and a saved state resumes it exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kto::data {

struct SamplerState {
  int64_t epoch = 0;
  int64_t position = 0;  // within the epoch's permutation
  bool operator==(const SamplerState& o) const { return epoch == o.epoch && position == o.position; }
};

struct SampledExample {
  int64_t index;  // dataset example
  int64_t epoch;
};

// [accumulation step][slot] for one rank.
using RankStep = std::vector<std::vector<SampledExample>>;

class BatchSampler {
 public:
  BatchSampler(int64_t num_examples, uint64_t seed, int64_t micro_batch, int64_t grad_accum, int world_size,
               int rank);

  // Turns length grouping on: `lengths[i]` orders example i (its tokens; for pairs the longer
  // one), `window_microbatches` = G above.
  void group_by_length(std::vector<int64_t> lengths, int64_t window_microbatches);

  RankStep next_step();
  // The whole global batch of the next step: [accumulation step][W * micro], rank r's slots at
  // [r * micro, (r + 1) * micro). Advances the state like next_step().
  RankStep next_global_step();
  SamplerState state() const { return state_; }
  // Continues from a saved state; throws kto::Error if it does not fit this dataset.
  void restore(const SamplerState& state);
  int64_t global_batch() const { return micro_ * accum_ * world_; }
  int64_t num_examples() const { return n_; }

  // The deterministic permutation of epoch `epoch` (Fisher-Yates over splitmix64; identical on
  // every platform and standard library).
  static std::vector<int64_t> permutation(int64_t num_examples, uint64_t seed, int64_t epoch);
  // `perm` (epoch `epoch`'s permutation) length-grouped as described above, its first run
  // `first_run` long (the rest of a microbatch begun in the epoch before; 0: none).
  static std::vector<int64_t> grouped(const std::vector<int64_t>& perm, const std::vector<int64_t>& lengths,
                                      int64_t micro, int64_t window_microbatches, int64_t first_run,
                                      uint64_t seed, int64_t epoch);

 private:
  const std::vector<int64_t>& perm(int64_t epoch);

  int64_t n_;
  uint64_t seed_;
  int64_t micro_, accum_;
  int world_, rank_;
  SamplerState state_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> cached_perm_;
  std::vector<int64_t> lengths_;  // empty: no length grouping
  int64_t window_microbatches_ = 0;
};

}  // namespace kto::data
