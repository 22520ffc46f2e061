#include "kto/fsdp/optimizer_options.h"

#include "kto/util/check.h"

namespace kto::fsdp {

using detail::str_cat;

void OptimizerOptions::validate(const std::string& source, const std::string& p) const {
  auto fail = [&](const char* key, const std::string& what) { throw key_error(source, p + key, what); };
  if (!(lr > 0)) fail("lr", str_cat("must be positive, got ", lr));
  if (!(eps > 0)) fail("eps", "must be positive");
  if (weight_decay < 0) fail("weight_decay", "must be >= 0");
  if (max_grad_norm < 0) fail("max_grad_norm", "must be >= 0 (0: no clipping)");
  if (!(beta1 >= 0 && beta1 < 1)) fail("beta1", "must be in [0, 1)");
  if (!(beta2 >= 0 && beta2 < 1)) fail("beta2", "must be in [0, 1)");
  if (!(alpha >= 0 && alpha < 1)) fail("alpha", "must be in [0, 1)");
}

}  // namespace kto::fsdp
