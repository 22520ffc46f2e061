#include "kto/data/options.h"

#include "kto/util/check.h"

namespace kto::data {

using detail::str_cat;

void DataOptions::validate(const std::string& source, const std::string& p) const {
  auto fail = [&](const char* key, const std::string& what) { throw key_error(source, p + key, what); };
  // Bounded: a step reads all its examples before it can look at a signal (10^8 made a run
  // unresponsive). A microbatch's activations are checked against the machine's memory once
  // the data's lengths are known (check_run).
  auto in_range = [&](const char* key, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) fail(key, str_cat(v, " is outside [", lo, ", ", hi, "]"));
  };
  in_range("micro_batch", micro_batch, 1, int64_t{1} << 16);
  in_range("grad_accum", grad_accum, 1, int64_t{1} << 16);
  in_range("global_batch", global_batch, 0, int64_t{1} << 24);
  in_range("pad_to_multiple_of", pad_to_multiple_of, 1, int64_t{1} << 16);
  in_range("group_microbatches", group_microbatches, 1, int64_t{1} << 20);
}

}  // namespace kto::data
