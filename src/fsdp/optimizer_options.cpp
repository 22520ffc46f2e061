#include "kto/fsdp/optimizer_options.h"

#include "kto/util/check.h"

namespace kto::fsdp {

using detail::str_cat;

void OptimizerOptions::validate(const std::string& source, const std::string& p) const {
  auto fail = [&](const char* key, const std::string& what) { throw key_error(source, p + key, what); };
  // `!(lo < x && x <= hi)` also refuses NaN; the upper bounds refuse .inf and absurd magnitudes.
  if (!(lr > 0 && lr <= 10)) fail("lr", str_cat("must be in (0, 10], got ", lr));
  if (!(eps > 0 && eps <= 1)) fail("eps", str_cat("must be in (0, 1], got ", eps));
  if (!(weight_decay >= 0 && weight_decay <= 10))
    fail("weight_decay", str_cat("must be in [0, 10], got ", weight_decay));
  if (!(max_grad_norm >= 0 && max_grad_norm <= 1e12))
    fail("max_grad_norm", str_cat("must be in [0, 1e12] (0: no clipping), got ", max_grad_norm));
  if (!(beta1 >= 0 && beta1 < 1)) fail("beta1", "must be in [0, 1)");
  if (!(beta2 >= 0 && beta2 < 1)) fail("beta2", "must be in [0, 1)");
  if (!(alpha >= 0 && alpha < 1)) fail("alpha", "must be in [0, 1)");
}

}  // namespace kto::fsdp
