// Learning-rate schedule: linear warmup from 0, then constant, linear or cosine decay to
// min_lr_ratio * lr at the last step.
#pragma once

#include <cstdint>

#include "kto/config/config.h"

namespace kto::train {

// The learning rate of step `step` (counting from 0) of a run of `total` optimizer steps with
// peak learning rate `lr`.
double learning_rate(const config::ScheduleSection& schedule, double lr, int64_t step, int64_t total);

}  // namespace kto::train
