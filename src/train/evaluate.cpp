// Eval on the held-out files: every example once, split round-robin over ranks. The sharded
// model's forwards are collective, so every rank runs the same number of microbatches (ranks
// with fewer repeat one with zero weight). z0 comes from the KL terms of the whole eval set
// (one all-reduce), then each example's loss, reward and classification sign(r - z0) follow.
// KL partners come from within each eval microbatch, or with data.pairing fixed from the eval
// set's own partner table.
#include <ATen/ATen.h>

#include <algorithm>

#include "kto/data/partners.h"
#include "kto/train/eval_metrics.h"
#include "kto/train/trainer.h"
#include "kto/util/check.h"

namespace kto::train {

std::map<std::string, double> Trainer::evaluate() {
  at::NoGradGuard no_grad;
  const data::Dataset& ds = *eval_data_;
  const int64_t W = world_.size(), r = world_.rank();
  const bool paired = ds.paired();
  const int64_t items = paired ? ds.size() / 2 : ds.size();
  std::vector<int64_t> mine;
  for (int64_t i = r; i < items; i += W) mine.push_back(i);
  // Microbatches of micro_batch items; a lone trailing item joins the previous one (KL pairs).
  const int64_t m = config_.data.micro_batch;
  std::vector<std::vector<int64_t>> groups;
  for (size_t k = 0; k < mine.size(); k += static_cast<size_t>(m)) {
    groups.emplace_back(
        mine.begin() + static_cast<std::ptrdiff_t>(k),
        mine.begin() + static_cast<std::ptrdiff_t>(std::min(mine.size(), k + static_cast<size_t>(m))));
  }
  if (groups.size() > 1 && groups.back().size() == 1) {
    groups[groups.size() - 2].push_back(groups.back().front());
    groups.pop_back();
  }
  const int64_t rounds = world_.all_reduce(static_cast<int64_t>(groups.size()), comm::ReduceOp::max);

  const data::BatchOptions bo =
      data::batch_options(config_.data, ds, loss::uses_kl(loss_.name), precomputed_);
  struct Done {
    data::Microbatch mb;
    LogProbs lp;  // with the KL terms (KTO)
    bool real;
    std::vector<int64_t> ids;  // the items of the microbatch
  };
  std::vector<Done> done;
  for (int64_t k = 0; k < rounds; ++k) {
    const bool real = k < static_cast<int64_t>(groups.size());
    // A rank out of examples repeats a valid microbatch so the collectives line up.
    std::vector<int64_t> ids =
        real ? groups[static_cast<size_t>(k)]
             : (groups.empty() ? std::vector<int64_t>{0, std::min<int64_t>(1, items - 1)} : groups[0]);
    if (!paired && ids.size() == 1) ids.push_back(ids.front());
    std::vector<data::Example> examples;
    if (paired) {
      for (int64_t i : ids) examples.push_back(ds.read(2 * i));
      for (int64_t i : ids) examples.push_back(ds.read(2 * i + 1));
    } else {
      for (int64_t i : ids) examples.push_back(ds.read(i));
    }
    data::Microbatch mb;
    if (bo.build_kl && bo.pairing == data::Pairing::fixed) {  // each example's own partner
      if (eval_partners_.empty())
        eval_partners_ = data::fixed_kl_partners(ds, static_cast<uint64_t>(config_.data.seed));
      mb = data::assemble_microbatch(examples, data::read_kl_partners(ds, examples, eval_partners_), bo);
    } else {
      mb = data::assemble_microbatch(examples, bo);
    }
    mb.paired = paired;
    const ReferenceLogProbs ref = reference_logprobs(mb, bo.build_kl);
    LogProbs lp = policy_logprobs(mb, ref, /*with_grad=*/false);
    done.push_back({std::move(mb), std::move(lp), real, ids});
  }

  // z0 over the whole eval set: this rank's KL (sum, count), all-reduced across ranks once.
  at::Tensor z0 = zero_z0();
  if (bo.build_kl) {
    std::vector<at::Tensor> kl;
    for (const Done& d : done) {
      if (d.real) kl.push_back(d.lp.kl);
    }
    const at::Tensor all = kl.empty() ? at::zeros({0}, z0.options()) : at::cat(kl);
    at::Tensor stats = loss::kl_statistics(all, loss_.estimator);
    comm_->all_reduce(stats, comm::ReduceOp::sum)->wait();
    z0 = loss::reference_point(stats, loss_.estimator).z0;
  }

  // Each example's reward, at its index in the dataset (paired: chosen 2i, rejected 2i+1), summed
  // over ranks (each example is one rank's) so every rank holds all of them; and the loss sum.
  const int64_t rows = paired ? 2 * items : items;
  at::Tensor all = at::zeros({rows + 2}, at::TensorOptions().dtype(at::kDouble));
  double* a = all.data_ptr<double>();
  for (const Done& d : done) {
    if (!d.real) continue;
    const loss::LossOutput out = objective(d.mb, d.lp, z0);
    const at::Tensor rewards = out.rewards.to(at::kDouble).cpu().contiguous();
    const double* r = rewards.data_ptr<double>();
    const int64_t n = static_cast<int64_t>(d.ids.size());
    for (int64_t k = 0; k < n; ++k) {
      if (paired) {
        a[2 * d.ids[k]] = r[k];
        a[2 * d.ids[k] + 1] = r[n + k];
      } else {
        a[d.ids[k]] = r[k];
      }
    }
    a[rows] += out.per_example.to(at::kDouble).sum().item<double>();
    a[rows + 1] += static_cast<double>(out.per_example.size(0));
  }
  at::Tensor shared = all.to(device_);
  comm_->all_reduce(shared, comm::ReduceOp::sum)->wait();
  all = shared.cpu();
  a = all.data_ptr<double>();
  std::vector<double> good, bad;  // rewards of desirable (chosen) and undesirable (rejected) examples
  for (int64_t i = 0; i < rows; ++i) (ds.desirable(i) ? good : bad).push_back(a[i]);
  std::map<std::string, double> out;
  out["eval/loss"] = a[rows + 1] > 0 ? a[rows] / a[rows + 1] : 0.0;
  out["eval/examples"] = static_cast<double>(rows);
  out["eval/count/desirable"] = static_cast<double>(good.size());
  out["eval/count/undesirable"] = static_cast<double>(bad.size());
  if (bo.build_kl) out["eval/kl"] = z0.item<double>();
  if (paired) {
    double preferred = 0;
    for (int64_t i = 0; i < items; ++i) preferred += a[2 * i] > a[2 * i + 1] ? 1.0 : 0.0;
    out["eval/preference_accuracy"] = items > 0 ? preferred / static_cast<double>(items) : 0.0;
  } else {
    const ClassificationMetrics c = classify(good, bad, loss_.beta * z0.to(at::kDouble).item<double>());
    out["eval/accuracy"] = c.accuracy;
    if (!good.empty()) out["eval/accuracy/desirable"] = c.accuracy_desirable;
    if (!bad.empty()) out["eval/accuracy/undesirable"] = c.accuracy_undesirable;
    if (!good.empty() && !bad.empty()) out["eval/balanced_accuracy"] = c.balanced_accuracy;
  }
  if (!good.empty() && !bad.empty()) out["eval/auc"] = reward_auc(good, bad);
  auto mean = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return sum / static_cast<double>(v.size());
  };
  if (!good.empty()) out["eval/rewards/desirable"] = mean(good);
  if (!bad.empty()) out["eval/rewards/undesirable"] = mean(bad);
  if (!good.empty() && !bad.empty())
    out["eval/rewards/margin"] = out["eval/rewards/desirable"] - out["eval/rewards/undesirable"];
  return out;
}

}  // namespace kto::train
