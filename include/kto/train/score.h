// kto-train --score-reference OUT (docs/training.md "Precomputed reference scores"): runs the
// run's frozen reference (model.reference_path, else model.path, else the policy's random
// initialisation), sharded over every rank, once over data.train and data.eval, and writes a
// copy of each file into OUT with its scores: /ref_logp (each example's completion), and for
// unpaired data /kl_partner (fixed KL partners drawn from data.seed, kto/data/partners.h) with
// /ref_kl_logp (the partner's completion after the example's prompt), plus the reference's
// identity and dtype. Paired data gets /ref_logp for chosen and rejected rows, no KL.
//
// Each rank scores every W-th microbatch of data.micro_batch examples (data.layout as in
// training, the same chunked log-probs); the scores are summed over ranks and rank 0 writes
// every file at the end (atomically: nothing appears on failure). Inputs are never modified;
// OUT must be new or empty. A restart scores from the beginning.
#pragma once

#include <string>

#include "kto/comm/process_group.h"
#include "kto/config/config.h"

namespace kto::train {

// Collective. Throws kto::Error / ConfigError naming the file or key.
void score_reference(const config::Config& config, const comm::ProcessGroup& world,
                     const std::string& out_dir);

}  // namespace kto::train
