#include "kto/train/eval_metrics.h"

#include <algorithm>
#include <utility>

namespace kto::train {

ClassificationMetrics classify(const std::vector<double>& desirable, const std::vector<double>& undesirable,
                               double threshold) {
  ClassificationMetrics m;
  double right_d = 0, right_u = 0;
  for (double r : desirable) right_d += r > threshold ? 1 : 0;
  for (double r : undesirable) right_u += r > threshold ? 0 : 1;
  const double nd = static_cast<double>(desirable.size()), nu = static_cast<double>(undesirable.size());
  if (nd + nu > 0) m.accuracy = (right_d + right_u) / (nd + nu);
  if (nd > 0) m.accuracy_desirable = right_d / nd;
  if (nu > 0) m.accuracy_undesirable = right_u / nu;
  m.balanced_accuracy = nd > 0 && nu > 0 ? 0.5 * (m.accuracy_desirable + m.accuracy_undesirable)
                        : nd > 0         ? m.accuracy_desirable
                                         : m.accuracy_undesirable;
  return m;
}

double reward_auc(const std::vector<double>& desirable, const std::vector<double>& undesirable) {
  if (desirable.empty() || undesirable.empty()) return 0.5;
  std::vector<std::pair<double, int>> all;  // (reward, 1 desirable / 0 undesirable)
  all.reserve(desirable.size() + undesirable.size());
  for (double r : desirable) all.emplace_back(r, 1);
  for (double r : undesirable) all.emplace_back(r, 0);
  std::sort(all.begin(), all.end());
  // Sum of the desirable examples' ranks (1-based; tied values share their mean rank).
  double rank_sum = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    double in_group = 0;
    while (j < all.size() && all[j].first == all[i].first) in_group += all[j++].second;
    const double mean_rank = 0.5 * static_cast<double>(i + 1 + j);  // ranks i+1 .. j
    rank_sum += in_group * mean_rank;
    i = j;
  }
  const double nd = static_cast<double>(desirable.size()), nu = static_cast<double>(undesirable.size());
  return (rank_sum - nd * (nd + 1) / 2) / (nd * nu);
}

}  // namespace kto::train
