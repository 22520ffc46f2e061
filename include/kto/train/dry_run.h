// kto-train --dry-run: sizes a job before it is queued. Reads the config, the model's
// config.json and the data files' headers (if present; no tokens, no weights), and prints the
// batch decomposition, the step count and the memory estimate per rank and per host for a given
// world size — the same figures (and the same checks) a real start would give.
#pragma once

#include <cstdint>
#include <string>

#include "kto/config/config.h"

namespace kto::train {

// Prints to stdout; throws kto::ConfigError for a batch that cannot be met at `world_size`.
void dry_run(const config::Config& config, int64_t world_size, int64_t ranks_per_host);

}  // namespace kto::train
