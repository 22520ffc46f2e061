// A synthetic feedback task for training tests: prompts of random tokens; a desirable
// completion uses only even token ids, an undesirable one only odd ids. A model that learns the
// rule ranks held-out completions by class; KTO's sign(r - z0) classifies them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kto::test {

struct SyntheticSpec {
  int64_t examples = 512;  // before subsampling (half desirable)
  uint64_t seed = 1;
  double keep_desirable = 1.0;  // drop desirable examples (imbalance)
  double keep_undesirable = 1.0;
  bool paired = false;  // chosen (even) and rejected (odd) for the same prompt
  int64_t vocab = 64;   // ids 0 (pad) and 1 (eos) are reserved
  int64_t prompt_len = 6, completion_len = 6;
  // CSFT conditioning: when set (recorded as the dataset's control_tokens attribute), the last
  // prompt token is the control id, vocab-2 for desirable and vocab-1 for undesirable examples.
  std::string control_tokens;
  // Examples whose first prompt token is the id `vocab`, which the task never uses otherwise (a
  // model then needs vocab + 1 rows): with that embedding row set to NaN, exactly the steps that
  // hold one of these examples are non-finite. Indices count written examples.
  std::vector<int64_t> rare_token_examples;
  // Precomputed reference log-probs (/ref_logp, /ref_kl_logp with /kl_partner: each example's
  // successor; train with data.pairing fixed): those of a uniform model,
  // -completion_len * ln(vocab), except +inf for ref_logp of the examples listed here (a
  // corrupted precomputed reference: for a desirable example, kto_logsigmoid's loss is then
  // +inf while its gradient stays finite).
  bool reference_logps = false;
  std::vector<int64_t> infinite_reference_examples;
};

// Writes an HDF5 dataset (kto-data's schema); returns the number of examples written.
int64_t write_synthetic_dataset(const std::string& path, const SyntheticSpec& spec);

// A kto-train YAML config for a tiny Llama on this task (vocab 64), with the given data files.
std::string synthetic_config(const std::string& train, const std::string& eval, const std::string& run_dir);

}  // namespace kto::test
