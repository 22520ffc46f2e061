// What a run's config means for its data and world size, checked in one place before any model
// loads: batch decomposition, step count, the loss against the data (paired or not, control
// tokens), the class weights (resolved from `auto`, checked against the paper's rule). Errors
// name the config key; advice is logged as warnings.
#pragma once

#include <cstdint>

#include "kto/config/config.h"
#include "kto/data/dataset.h"
#include "kto/io/tokenizer_files.h"
#include "kto/loss/options.h"
#include "kto/model/model_config.h"

namespace kto::fsdp {
struct StepCollectiveBytes;
}
namespace kto::model {
struct ModelLayout;
}

namespace kto::train {

struct RunPlan {
  int64_t grad_accum = 1;   // microbatches per rank per optimizer step
  int64_t total_steps = 1;  // train.steps, or train.epochs over the data
  loss::LossOptions loss;   // the config's, class weights resolved
  // The reference's log-probs come from the data (reference.precomputed): no reference model.
  bool precomputed = false;
};

// What the run's reference is, without its path: hf_directory_identity of model.reference_path
// (else model.path), or the random initialisation's seed, std and architecture hash. Scores
// written by kto-train --score-reference record it; a run using them checks it.
std::string reference_content_identity(const config::Config& config, const model::ModelConfig& policy);

// Which data.micro_batch or data.global_batch values would fit `world_size` ranks, for the error
// when data.global_batch does not divide.
std::string batch_advice(const data::DataOptions& data, int64_t world_size);

// Microbatches per rank per step: data.grad_accum, or derived from data.global_batch (which must
// divide by micro_batch x world size: else kto::ConfigError with batch_advice).
int64_t grad_accum_for(const data::DataOptions& data, int64_t world_size);

// Throws kto::ConfigError naming the key. `eval` may be null. Decides reference.precomputed:
// scores present for every pass the loss needs (with data.pairing fixed for the KL pass), in the
// eval data too, recorded for the configured reference.
RunPlan check_run(const config::Config& config, const model::ModelConfig& model, const data::Dataset& train,
                  const data::Dataset* eval, int64_t world_size);

// train.steps, or train.epochs over `items` (examples, or pairs) at `global_batch` items a step;
// at least 1.
int64_t total_steps_for(const config::TrainSection& train, int64_t items, int64_t global_batch);

// Memory per rank: the training state sharded over `shard_size` ranks (the shard group's size:
// the world size under full sharding) and one microbatch's activations at the data's longest
// sequence (`max_length`; 0: the model's max_position_embeddings).
struct MemoryEstimate {
  double state = 0, activations = 0;
  int64_t seq = 0;
};
MemoryEstimate estimate_memory(const config::Config& config, const model::ModelConfig& model,
                               int64_t max_length, bool paired, int64_t shard_size, bool with_reference);

// fsdp::step_collective_bytes of `config`'s run (its compute and master dtypes, recompute) with
// shard groups of `shard_size` ranks, `replicas` groups and `grad_accum` microbatches per step.
fsdp::StepCollectiveBytes step_traffic(const config::Config& config, const model::ModelLayout& layout,
                                       int shard_size, int replicas, int64_t grad_accum, bool with_reference);

// The collective traffic of one training step per rank, by link, as the banner and --dry-run
// print it: "1.2 GiB in the shard group (all-gathers and reduce-scatters, within a host), 48 MiB
// across replicas (gradient all-reduce, across hosts)".
std::string traffic_text(const fsdp::StepCollectiveBytes& bytes, int shard_size, int replicas,
                         bool shard_spans_hosts, bool replica_spans_hosts);

// Refuses (kto::Error) a run whose estimated memory on one host — the sharded training state
// of `ranks_on_host` ranks plus each one's activations for a microbatch of the data's longest
// sequences — exceeds the host's physical memory, naming the estimate, what it counts and the
// keys to change (run.check_memory: false skips the check).
void check_run_memory(const config::Config& config, const model::ModelConfig& model,
                      const data::Dataset& train, int shard_size, int ranks_on_host, bool with_reference);

// The eval files and the model directory's tokenizer files (when it has any) must have the
// tokenizer the training data was prepared with (its sha256); kto::ConfigError naming both files
// and hashes, or a warning with data.allow_tokenizer_mismatch. `eval` may be null.
void check_tokenizers(const config::Config& config, const data::Dataset& train, const data::Dataset* eval);

// The tokenizer files final/ gets (train.export_tokenizer), decided before training so a missing
// tokenizer is an error at the start, not after the last step. Empty for export_tokenizer none,
// without export_final, or for data that records no tokenizer (synthetic token ids).
std::vector<io::TokenizerFile> export_tokenizer_files(const config::Config& config,
                                                      const data::Dataset& train);

// Every file of `files` exists; else kto::ConfigError naming `key` and the file.
void check_files_exist(const std::vector<std::string>& files, const char* key);

}  // namespace kto::train
