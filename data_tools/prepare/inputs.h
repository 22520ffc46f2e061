// The first stage of kto-data prepare: the input files (JSON lines or a JSON array, optionally
// gzipped) read into texts row by row, with per-class subsampling and the counts and reasons
// of skipped rows. Private to data_tools/prepare.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prepare.h"
#include "rows.h"

namespace kto::data_tools {

struct Located {
  TextExample text;
  int64_t row = 0;  // global row number, for seeded per-row decisions
};

// A uniform number in [0, 1) fixed by (seed, stream, index): subsampling and the eval split
// do not depend on thread count or input order within a file.
double unit_hash(uint64_t seed, uint64_t stream, uint64_t index);

// "12.34%".
std::string percent(double fraction);

// Every input's usable rows as texts. Rows that cannot be used are counted in `summary` (their
// reasons summed up in *reasons); past --max-error-rate the preparation fails before anything
// is written.
std::vector<Located> read_inputs(const PrepareOptions& options, PrepareSummary& summary,
                                 std::string* reasons);

}  // namespace kto::data_tools
