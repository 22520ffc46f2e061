// Classification metrics of eval rewards, honest under class imbalance: an accuracy that is
// just the majority class's share shows up as a balanced accuracy of 0.5.
#pragma once

#include <vector>

namespace kto::train {

struct ClassificationMetrics {
  double accuracy = 0;              // share of examples on the right side of the threshold
  double accuracy_desirable = 0;    // desirable examples with reward > threshold
  double accuracy_undesirable = 0;  // undesirable examples with reward <= threshold
  double balanced_accuracy = 0;     // mean of the two per-class accuracies
};

// KTO's classification: desirable when the reward exceeds `threshold` (beta z0).
ClassificationMetrics classify(const std::vector<double>& desirable, const std::vector<double>& undesirable,
                               double threshold);

// Threshold-free: the probability that a desirable example's reward exceeds an undesirable
// one's (ties count half) — the area under the ROC curve (Mann-Whitney U / (n_D n_U)), in
// O(n log n). 0.5 when both lists are empty.
double reward_auc(const std::vector<double>& desirable, const std::vector<double>& undesirable);

}  // namespace kto::train
