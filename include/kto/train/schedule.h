// Learning-rate schedule: linear warmup from 0, then constant, linear or cosine decay to
// min_lr_ratio * lr at the last step.
#pragma once

#include <cstdint>
#include <string>

namespace kto::train {

// `step` counts from 0; `total` is the number of optimizer steps of the run.
double learning_rate(double lr, int64_t warmup_steps, const std::string& decay, double min_lr_ratio,
                     int64_t step, int64_t total);

}  // namespace kto::train
