#include "kto/data/loader.h"

#include "kto/util/check.h"

namespace kto::data {

PairScope parse_pair_scope(const std::string& name) {
  if (name == "global") return PairScope::global;
  if (name == "rank") return PairScope::rank;
  throw ConfigError("unknown KL pair scope '" + name + "' (global or rank)");
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options, int world_size,
                       int rank)
    : dataset_(std::move(dataset)),
      options_(std::move(options)),
      sampler_(dataset_->paired() ? dataset_->size() / 2 : dataset_->size(), options_.seed,
               options_.micro_batch, options_.grad_accum, world_size, rank),
      world_(world_size),
      rank_(rank) {
  if (dataset_->paired()) options_.batch.build_kl = false;
  const bool global_pairs = options_.pair_scope == PairScope::global && options_.batch.build_kl;
  if (options_.micro_batch * (global_pairs ? world_size : 1) < 2 && options_.batch.build_kl) {
    throw ConfigError(
        detail::str_cat("micro_batch is ", options_.micro_batch,
                        ": KTO's KL estimate needs at least 2 examples per microbatch (mismatched pairs)"));
  }
  if (options_.batch.pad_id < 0) {
    const DatasetAttributes& a = dataset_->attributes();
    options_.batch.pad_id = a.pad_id >= 0 ? a.pad_id : (a.eos_id >= 0 ? a.eos_id : 0);
  }
  options_.batch.with_reference_logps = dataset_->has_reference_logps();
}

std::vector<Microbatch> DataLoader::next_step() {
  std::vector<Microbatch> out;
  const bool global_pairs = options_.pair_scope == PairScope::global && options_.batch.build_kl;
  const int64_t m = options_.micro_batch;
  for (const auto& global : sampler_.next_global_step()) {  // one global microbatch per accumulation step
    std::vector<Example> examples;
    if (dataset_->paired()) {
      for (int64_t k = rank_ * m; k < (rank_ + 1) * m; ++k)
        examples.push_back(dataset_->read(2 * global[static_cast<size_t>(k)].index));
      for (int64_t k = rank_ * m; k < (rank_ + 1) * m; ++k) {
        examples.push_back(dataset_->read(2 * global[static_cast<size_t>(k)].index + 1));
      }
      out.push_back(assemble_microbatch(examples, options_.batch));
    } else if (global_pairs) {
      // Partners are picked over the global microbatch; a rank reads the ones it needs.
      const int64_t n = static_cast<int64_t>(global.size());
      std::vector<Example> partners;
      for (int64_t k = rank_ * m; k < (rank_ + 1) * m; ++k) {
        examples.push_back(dataset_->read(global[static_cast<size_t>(k)].index));
        partners.push_back(
            dataset_->read(global[static_cast<size_t>(paired_index(options_.batch.pairing, k, n))].index));
      }
      out.push_back(assemble_microbatch(examples, partners, options_.batch));
    } else {
      for (int64_t k = rank_ * m; k < (rank_ + 1) * m; ++k)
        examples.push_back(dataset_->read(global[static_cast<size_t>(k)].index));
      out.push_back(assemble_microbatch(examples, options_.batch));
    }
    out.back().paired = dataset_->paired();
  }
  return out;
}

}  // namespace kto::data
