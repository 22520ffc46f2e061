#include "kto/data/loader.h"

#include <algorithm>

#include "kto/data/partners.h"
#include "kto/util/check.h"

namespace kto::data {

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, const DataOptions& options, int64_t grad_accum,
                       BatchOptions batch, int world_size, int rank)
    : dataset_(std::move(dataset)),
      micro_batch_(options.micro_batch),
      pair_scope_(options.pair_scope),
      batch_(batch),
      sampler_(dataset_->paired() ? dataset_->size() / 2 : dataset_->size(),
               static_cast<uint64_t>(options.seed), options.micro_batch, grad_accum, world_size, rank),
      rank_(rank) {
  KTO_CHECK(!(batch_.build_kl && dataset_->paired()), "paired data has no KL pass");
  if (batch_.build_kl && batch_.pairing == Pairing::fixed) {
    partners_ = fixed_kl_partners(*dataset_, static_cast<uint64_t>(options.seed));
  }
  KTO_CHECK(!(batch_.build_kl && batch_.with_reference_logps) ||
                (batch_.pairing == Pairing::fixed && dataset_->has_reference_kl_logps()),
            "precomputed KL scores need their dataset's fixed partners");
  if (options.group_by_length) {
    std::vector<int64_t> lengths(static_cast<size_t>(sampler_.num_examples()));
    for (int64_t i = 0; i < sampler_.num_examples(); ++i) {
      lengths[static_cast<size_t>(i)] = dataset_->paired()
                                            ? std::max(dataset_->length(2 * i), dataset_->length(2 * i + 1))
                                            : dataset_->length(i);
    }
    sampler_.group_by_length(std::move(lengths), options.group_microbatches);
  }
  // The trainer's check_run() refuses such configs, naming the key; this is the loader's own
  // precondition.
  const bool global_pairs = pair_scope_ == PairScope::global && batch_.build_kl;
  KTO_CHECK(!batch_.build_kl || !partners_.empty() || micro_batch_ * (global_pairs ? world_size : 1) >= 2,
            "micro_batch ", micro_batch_,
            ": the KL pass needs at least 2 examples per microbatch (mismatched pairs)");
}

std::vector<Microbatch> DataLoader::next_step() {
  std::vector<Microbatch> out;
  const bool global_pairs = pair_scope_ == PairScope::global && batch_.build_kl;
  const int64_t m = micro_batch_;
  const bool fixed = !partners_.empty();
  for (const auto& global : sampler_.next_global_step()) {  // one global microbatch per accumulation step
    std::vector<Example> examples;
    if (dataset_->paired()) {
      for (int64_t k = rank_ * m; k < (rank_ + 1) * m; ++k)
        examples.push_back(dataset_->read(2 * global[static_cast<size_t>(k)].index));
      for (int64_t k = rank_ * m; k < (rank_ + 1) * m; ++k) {
        examples.push_back(dataset_->read(2 * global[static_cast<size_t>(k)].index + 1));
      }
      out.push_back(assemble_microbatch(examples, batch_));
    } else if (fixed) {  // each example's own partner, wherever it is
      for (int64_t k = rank_ * m; k < (rank_ + 1) * m; ++k)
        examples.push_back(dataset_->read(global[static_cast<size_t>(k)].index));
      out.push_back(assemble_microbatch(examples, read_kl_partners(*dataset_, examples, partners_), batch_));
    } else if (global_pairs) {
      // Partners are picked over the global microbatch; a rank reads the ones it needs.
      const int64_t n = static_cast<int64_t>(global.size());
      std::vector<Example> partners;
      for (int64_t k = rank_ * m; k < (rank_ + 1) * m; ++k) {
        examples.push_back(dataset_->read(global[static_cast<size_t>(k)].index));
        partners.push_back(
            dataset_->read(global[static_cast<size_t>(paired_index(batch_.pairing, k, n))].index));
      }
      out.push_back(assemble_microbatch(examples, partners, batch_));
    } else {
      for (int64_t k = rank_ * m; k < (rank_ + 1) * m; ++k)
        examples.push_back(dataset_->read(global[static_cast<size_t>(k)].index));
      out.push_back(assemble_microbatch(examples, batch_));
    }
    out.back().paired = dataset_->paired();
  }
  return out;
}

}  // namespace kto::data
