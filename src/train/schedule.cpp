#include "kto/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace kto::train {

double learning_rate(const config::ScheduleSection& s, double lr, int64_t step, int64_t total) {
  const int64_t warmup = s.warmup_steps;
  if (warmup > 0 && step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t span = std::max<int64_t>(1, total - warmup - 1);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(span));
  const double min_ratio = s.min_lr_ratio;
  switch (s.decay) {
    case config::Decay::constant: return lr;
    case config::Decay::linear: return lr * (1.0 - (1.0 - min_ratio) * progress);
    case config::Decay::cosine:
      return lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + std::cos(M_PI * progress)));
  }
  return lr;
}

}  // namespace kto::train
