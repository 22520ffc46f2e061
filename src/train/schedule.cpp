#include "kto/train/schedule.h"

#include <algorithm>
#include <cmath>

#include "kto/util/check.h"

namespace kto::train {

double learning_rate(double lr, int64_t warmup, const std::string& decay, double min_ratio, int64_t step,
                     int64_t total) {
  if (warmup > 0 && step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (decay == "constant") return lr;
  const int64_t span = std::max<int64_t>(1, total - warmup - 1);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(span));
  if (decay == "linear") return lr * (1.0 - (1.0 - min_ratio) * progress);
  if (decay == "cosine")
    return lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + std::cos(M_PI * progress)));
  throw ConfigError("unknown schedule.decay '" + decay + "' (constant, linear, cosine)");
}

}  // namespace kto::train
