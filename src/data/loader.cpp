#include "kto/data/loader.h"

#include "kto/util/check.h"

namespace kto::data {

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options, int world_size,
                       int rank)
    : dataset_(std::move(dataset)),
      options_(std::move(options)),
      sampler_(dataset_->size(), options_.seed, options_.micro_batch, options_.grad_accum, world_size, rank) {
  if (options_.micro_batch < 2) {
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
  for (const auto& micro : sampler_.next_step()) {
    std::vector<Example> examples;
    examples.reserve(micro.size());
    for (const SampledExample& s : micro) examples.push_back(dataset_->read(s.index));
    out.push_back(assemble_microbatch(examples, options_.batch));
  }
  return out;
}

}  // namespace kto::data
