// Eval on the held-out files: every example once, split round-robin over ranks. The sharded
// model's forwards are collective, so every rank runs the same number of microbatches (ranks
// with fewer repeat one with zero weight). z0 comes from the KL terms of the whole eval set
// (one all-reduce), then each example's loss, reward and classification sign(r - z0) follow.
#include <ATen/ATen.h>

#include <algorithm>

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

  const data::BatchOptions bo = data::batch_options(config_.data, ds, loss::uses_kl(loss_.name));
  struct Done {
    data::Microbatch mb;
    LogProbs lp;
    at::Tensor kl;  // KL terms (KTO)
    bool real;
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
    data::Microbatch mb = data::assemble_microbatch(examples, bo);
    mb.paired = paired;
    const at::Tensor kl = bo.build_kl ? kl_terms(mb) : at::Tensor();
    LogProbs lp = target_logprobs(mb, /*with_grad=*/false);
    done.push_back({std::move(mb), std::move(lp), kl, real});
  }

  // z0 over the whole eval set: this rank's KL (sum, count), all-reduced across ranks once.
  at::Tensor z0 = zero_z0();
  if (bo.build_kl) {
    std::vector<at::Tensor> kl;
    for (const Done& d : done) {
      if (d.real) kl.push_back(d.kl);
    }
    const at::Tensor all = kl.empty() ? at::zeros({0}, z0.options()) : at::cat(kl);
    at::Tensor stats = loss::kl_statistics(all, loss_.estimator);
    comm_->all_reduce(stats, comm::ReduceOp::sum)->wait();
    z0 = loss::reference_point(stats, loss_.estimator).z0;
  }

  // Sums: loss, examples, correct, and per-class rewards (as in training) and z0.
  at::Tensor sums = at::zeros({8}, at::TensorOptions().dtype(at::kDouble).device(device_));
  for (const Done& d : done) {
    if (!d.real) continue;
    const loss::LossOutput out = objective(d.mb, d.lp, z0);
    const at::Tensor rewards = out.rewards.to(at::kDouble);
    at::Tensor correct, rd, ru, nd, nu;
    if (paired) {
      const int64_t n = rewards.size(0) / 2;
      correct = (rewards.narrow(0, 0, n) > rewards.narrow(0, n, n)).to(at::kDouble).sum();
      rd = rewards.narrow(0, 0, n).sum();
      ru = rewards.narrow(0, n, n).sum();
      nd = nu = at::full({}, static_cast<double>(n), rewards.options());
    } else {
      const at::Tensor des = d.mb.desirable.to(device_).to(at::kDouble);
      // Classification by the sign of r - z0 (beta r vs beta z0: same sign).
      const at::Tensor predicted = (rewards - loss_.beta * z0.to(at::kDouble) > 0).to(at::kDouble);
      correct = (predicted == des).to(at::kDouble).sum();
      rd = (rewards * des).sum();
      ru = (rewards * (1.0 - des)).sum();
      nd = des.sum();
      nu = (1.0 - des).sum();
    }
    const double examples = static_cast<double>(out.per_example.size(0));
    sums.add_(at::stack({out.per_example.to(at::kDouble).sum(), at::full({}, examples, sums.options()),
                         correct, rd, ru, nd, nu, z0.to(at::kDouble)}));
  }
  comm_->all_reduce(sums, comm::ReduceOp::sum)->wait();
  const at::Tensor s = sums.cpu();
  auto v = [&](int i) { return s[i].item<double>(); };
  std::map<std::string, double> out;
  out["eval/loss"] = v(1) > 0 ? v(0) / v(1) : 0.0;
  const double judged = paired ? v(5) : v(5) + v(6);
  out["eval/accuracy"] = judged > 0 ? v(2) / judged : 0.0;
  out["eval/examples"] = v(5) + v(6);
  if (bo.build_kl) out["eval/kl"] = z0.item<double>();
  if (v(5) > 0) out["eval/rewards/desirable"] = v(3) / v(5);
  if (v(6) > 0) out["eval/rewards/undesirable"] = v(4) / v(6);
  if (v(5) > 0 && v(6) > 0)
    out["eval/rewards/margin"] = out["eval/rewards/desirable"] - out["eval/rewards/undesirable"];
  return out;
}

}  // namespace kto::train
