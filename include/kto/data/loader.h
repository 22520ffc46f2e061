// The trainer's data source: a dataset, this rank's sampler and microbatch assembly, in one.
// On a paired dataset the sampler draws pairs, and each microbatch holds micro_batch pairs
// (chosen completions first, then their rejected ones).
//
//   DataLoader loader(dataset, config.data, grad_accum, batch_options(config.data, *dataset, kl), W, rank);
//   for (const Microbatch& mb : loader.next_step()) ...   // grad_accum microbatches
//   checkpoint << loader.state();  ...  loader.restore(state);
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kto/data/batch.h"
#include "kto/data/dataset.h"
#include "kto/data/options.h"
#include "kto/data/sampler.h"

namespace kto::data {

class DataLoader {
 public:
  // Uses options.seed, micro_batch and pair_scope (pairing fixed: the dataset's stored partners,
  // else drawn from options.seed, partners.h); `grad_accum` is the resolved number of
  // microbatches per step (from data.global_batch or data.grad_accum).
  DataLoader(std::shared_ptr<const Dataset> dataset, const DataOptions& options, int64_t grad_accum,
             BatchOptions batch, int world_size, int rank);

  // This rank's grad_accum microbatches of the next step (reads only their examples).
  // `micro_batch` counts examples, or pairs on a paired dataset.
  std::vector<Microbatch> next_step();
  SamplerState state() const { return sampler_.state(); }
  void restore(const SamplerState& state) { sampler_.restore(state); }
  int64_t global_batch() const { return sampler_.global_batch(); }

 private:
  std::shared_ptr<const Dataset> dataset_;
  int64_t micro_batch_;
  PairScope pair_scope_;
  BatchOptions batch_;
  BatchSampler sampler_;
  std::vector<int64_t> partners_;  // pairing fixed: each example's KL partner
  int rank_;
};

}  // namespace kto::data
