// The trainer's data source: a dataset, this rank's sampler and microbatch assembly, in one.
// On a paired dataset the sampler draws pairs, and each microbatch holds micro_batch pairs
// (chosen completions first, then their rejected ones).
//
//   DataLoader loader(dataset, {.seed = 1, .micro_batch = 4, .grad_accum = 2}, world, rank);
//   for (const Microbatch& mb : loader.next_step()) ...   // grad_accum microbatches
//   checkpoint << loader.state();  ...  loader.restore(state);
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kto/data/batch.h"
#include "kto/data/dataset.h"
#include "kto/data/sampler.h"

namespace kto::data {

// Where a KL partner may come from: `rank` pairs within each rank's microbatch (TRL, HALOs);
// `global` pairs within the global microbatch across ranks, so the KL terms — and z0 — do not
// depend on the world size (a rank reads its partners' examples directly).
enum class PairScope { rank, global };
PairScope parse_pair_scope(const std::string& name);

struct LoaderOptions {
  uint64_t seed = 0;
  int64_t micro_batch = 2;
  int64_t grad_accum = 1;
  PairScope pair_scope = PairScope::global;
  BatchOptions batch;  // pad_id defaults to the dataset's pad id when left at -1
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options, int world_size, int rank);

  // This rank's grad_accum microbatches of the next step (reads only their examples).
  // `micro_batch` counts examples, or pairs on a paired dataset.
  std::vector<Microbatch> next_step();
  SamplerState state() const { return sampler_.state(); }
  const LoaderOptions& options() const { return options_; }
  void restore(const SamplerState& state) { sampler_.restore(state); }
  const Dataset& dataset() const { return *dataset_; }
  int64_t global_batch() const { return sampler_.global_batch(); }

 private:
  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
  BatchSampler sampler_;
  int world_, rank_;
};

}  // namespace kto::data
