// What a run's config means for its data and world size, checked in one place before any model
// loads: batch decomposition, step count, the loss against the data (paired or not, control
// tokens), the class weights (resolved from `auto`, checked against the paper's rule). Errors
// name the config key; advice is logged as warnings.
#pragma once

#include <cstdint>

#include "kto/config/config.h"
#include "kto/data/dataset.h"
#include "kto/loss/options.h"
#include "kto/model/model_config.h"

namespace kto::train {

struct RunPlan {
  int64_t grad_accum = 1;   // microbatches per rank per optimizer step
  int64_t total_steps = 1;  // train.steps, or train.epochs over the data
  loss::LossOptions loss;   // the config's, class weights resolved
};

// Throws kto::ConfigError naming the key. `eval` may be null.
RunPlan check_run(const config::Config& config, const model::ModelConfig& model, const data::Dataset& train,
                  const data::Dataset* eval, int64_t world_size);

// Refuses (kto::Error) a run whose estimated memory on one host — the sharded training state
// of `ranks_on_host` ranks plus each one's activations for a microbatch of the data's longest
// sequences — exceeds the host's physical memory, naming the estimate, what it counts and the
// keys to change (run.check_memory: false skips the check).
void check_run_memory(const config::Config& config, const model::ModelConfig& model,
                      const data::Dataset& train, int world_size, int ranks_on_host, bool with_reference);

// Every file of `files` exists; else kto::ConfigError naming `key` and the file.
void check_files_exist(const std::vector<std::string>& files, const char* key);

}  // namespace kto::train
