#include "kto/train/metrics.h"

#include <ATen/ATen.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "kto/util/check.h"
#include "kto/util/files.h"

namespace kto::train {

namespace {

// Slots of the per-step sums.
enum Slot {
  kLoss,
  kZ0,
  kMicro,
  kNd,
  kNu,
  kRewD,
  kRewU,
  kLogpD,
  kLogpU,
  kTokens,
  kPositions,
  kReal,
  kFlops,
  kSlots
};

}  // namespace

StepSums::StepSums(at::Device device)
    : sums_(at::zeros({kSlots}, at::TensorOptions().dtype(at::kDouble).device(device))) {}

void StepSums::add(const data::Microbatch& mb, const loss::LossOutput& out, const at::Tensor& z0,
                   const at::Tensor& policy_logps, double executed_flops) {
  at::NoGradGuard no_grad;
  const at::Tensor logp = policy_logps.detach().to(at::kDouble);
  const at::Tensor rewards = out.rewards.to(at::kDouble);
  at::Tensor d, u, rd, ru, ld, lu;
  if (mb.paired) {  // chosen rows first, then rejected
    const int64_t m = logp.size(0) / 2;
    rd = rewards.narrow(0, 0, m);
    ru = rewards.narrow(0, m, m);
    ld = logp.narrow(0, 0, m);
    lu = logp.narrow(0, m, m);
    d = at::ones({m}, logp.options());
    u = d;
  } else {
    d = mb.desirable.to(logp.device()).to(at::kDouble);
    u = 1.0 - d;
    rd = rewards * d;
    ru = rewards * u;
    ld = logp * d;
    lu = logp * u;
  }
  // Positions the forwards compute (target and KL batches, padding included) and real tokens.
  int64_t positions = mb.target.positions, real = mb.target.real_positions;
  if (mb.kl.defined()) {
    positions += mb.kl.positions;
    real += mb.kl.real_positions;
  }
  const at::Tensor values =
      at::stack({out.loss.detach().to(at::kDouble), z0.to(logp.device()).to(at::kDouble),
                 at::ones({}, logp.options()), d.sum(), u.sum(), rd.sum(), ru.sum(), ld.sum(), lu.sum(),
                 at::full({}, static_cast<double>(mb.target.num_tokens), logp.options()),
                 at::full({}, static_cast<double>(positions), logp.options()),
                 at::full({}, static_cast<double>(real), logp.options()),
                 at::full({}, executed_flops, logp.options())});
  sums_.add_(values);
}

bool StepSums::loss_is_finite() const { return std::isfinite(sums_[kLoss].item<double>()); }

std::map<std::string, double> StepSums::reduce(comm::Communicator& comm) {
  comm.all_reduce(sums_, comm::ReduceOp::sum)->wait();  // one all-reduce per step for every metric
  const at::Tensor s = sums_.cpu();
  auto v = [&](Slot i) { return s[i].item<double>(); };
  std::map<std::string, double> m;
  const double micro = v(kMicro);
  m["loss"] = v(kLoss) / micro;  // = the effective objective: mean over ranks and accumulation
  m["kl"] = v(kZ0) / micro;
  m["count/desirable"] = v(kNd);
  m["count/undesirable"] = v(kNu);
  m["tokens"] = v(kTokens);
  m["executed_flops"] = v(kFlops);  // the job's, this step
  if (v(kPositions) > 0) m["padding"] = 1.0 - v(kReal) / v(kPositions);
  if (v(kNd) > 0) {
    m["rewards/desirable"] = v(kRewD) / v(kNd);
    m["logps/desirable"] = v(kLogpD) / v(kNd);
  }
  if (v(kNu) > 0) {
    m["rewards/undesirable"] = v(kRewU) / v(kNu);
    m["logps/undesirable"] = v(kLogpU) / v(kNu);
  }
  if (v(kNd) > 0 && v(kNu) > 0) m["rewards/margin"] = m["rewards/desirable"] - m["rewards/undesirable"];
  return m;
}

MetricsLog::MetricsLog(const std::string& run_dir, bool is_root)
    : path_(join_path(run_dir, "metrics.jsonl")) {
  if (!is_root) return;
  make_directories(run_dir);
  file_ = std::fopen(path_.c_str(), "a");
  if (file_ == nullptr) throw Error(path_ + ": cannot open for appending");
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::rewind(int64_t step) {
  if (file_ == nullptr) return;
  std::fclose(file_);
  file_ = nullptr;
  const std::string text = read_text_file(path_);
  std::string kept;
  for (size_t begin = 0; begin < text.size();) {
    const size_t end = text.find('\n', begin);
    if (end == std::string::npos) break;  // cut short by a crash: not a record
    const std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool later = record.is_object() && record.contains("step") && record["step"].is_number() &&
                       record["step"].get<double>() > static_cast<double>(step);
    if (!later) kept += line + "\n";
  }
  write_text_file(path_, kept);
  file_ = std::fopen(path_.c_str(), "a");
  if (file_ == nullptr) throw Error(path_ + ": cannot open for appending");
}

void MetricsLog::write(const std::map<std::string, double>& values,
                       const std::map<std::string, std::string>& labels) {
  if (file_ == nullptr) return;
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : labels) j[k] = v;
  for (const auto& [k, v] : values) {
    if (std::isfinite(v)) {
      j[k] = v;
    } else {
      j[k] = std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");  // JSON has no NaN
    }
  }
  const std::string line = j.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

namespace {
std::string fmt(const char* f, double v) {
  char text[64];
  std::snprintf(text, sizeof(text), f, v);
  return text;
}
std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long t = static_cast<long>(s + 0.5);
  char text[32];
  if (t >= 3600)
    std::snprintf(text, sizeof(text), "%ldh%02ldm", t / 3600, t / 60 % 60);
  else
    std::snprintf(text, sizeof(text), "%ldm%02lds", t / 60, t % 60);
  return text;
}
}  // namespace

std::string progress_line(const std::map<std::string, double>& m, int64_t step, int64_t total, double eta) {
  auto get = [&](const char* k) {
    auto it = m.find(k);
    return it == m.end() ? std::optional<double>() : it->second;
  };
  std::string line = detail::str_cat("step ", step, "/", total);
  line += " | loss " + fmt("%.4f", m.at("loss"));
  if (auto r = get("kl")) line += " | kl " + fmt("%.4f", *r);
  if (auto r = get("rewards/desirable")) line += " | rew+ " + fmt("%.4f", *r);
  if (auto r = get("rewards/undesirable")) line += " | rew- " + fmt("%.4f", *r);
  if (auto r = get("grad_norm")) line += " | gnorm " + fmt("%.3f", *r);
  if (auto r = get("lr")) line += " | lr " + fmt("%.2e", *r);
  if (auto r = get("tokens_per_s")) line += " | " + fmt("%.0f", *r) + " tok/s";
  if (auto r = get("mfu")) line += " | MFU " + fmt("%.1f", 100 * *r) + "%";
  line += " | ETA " + duration(eta);
  return line;
}

std::string eval_line(const std::map<std::string, double>& e, int64_t step) {
  std::string line = detail::str_cat("step ", step, ": loss ", e.at("eval/loss"));
  for (const auto& [key, label] :
       {std::pair<const char*, const char*>{"eval/preference_accuracy", "preference accuracy"},
        {"eval/balanced_accuracy", "balanced accuracy"},
        {"eval/accuracy/desirable", "accuracy+"},
        {"eval/accuracy/undesirable", "accuracy-"},
        {"eval/auc", "AUC"},
        {"eval/rewards/desirable", "rew+"},
        {"eval/rewards/undesirable", "rew-"},
        {"eval/kl", "kl"}}) {
    if (const auto it = e.find(key); it != e.end())
      line += detail::str_cat(", ", label, " ", fmt("%.4g", it->second));
  }
  return line;
}

}  // namespace kto::train
