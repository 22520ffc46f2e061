#include "kto/data/options.h"

#include "kto/util/check.h"

namespace kto::data {

using detail::str_cat;

void DataOptions::validate(const std::string& source, const std::string& p) const {
  auto fail = [&](const char* key, const std::string& what) { throw key_error(source, p + key, what); };
  if (micro_batch < 1) fail("micro_batch", str_cat("must be >= 1, got ", micro_batch));
  if (global_batch < 0) fail("global_batch", str_cat("must be >= 0, got ", global_batch));
  if (grad_accum < 1) fail("grad_accum", str_cat("must be >= 1, got ", grad_accum));
  if (pad_to_multiple_of < 1) fail("pad_to_multiple_of", "must be >= 1");
}

}  // namespace kto::data
