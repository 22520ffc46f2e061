#include "kto/train/resume_check.h"

#include <algorithm>

#include "kto/util/check.h"

namespace kto::train {

using detail::str_cat;

std::string RunChange::text() const { return key + ": " + before + " → " + after; }

const std::vector<std::string>& resumable_keys() {
  // "x.*": every key of section x; otherwise the exact key. Paths may change because what they
  // point to is checked by content: the data files (data.train[i], data.eval[i]), the
  // architecture and the reference (model.architecture, model.reference). The batch keys may
  // change because what they amount to is compared instead: data.global_batch (resolved) and
  // data.global_microbatch (the KL groups). data.layout gives the same log-probs up to rounding.
  static const std::vector<std::string> keys = {"train.steps",
                                                "train.epochs",
                                                "train.eval_every",
                                                "train.log_every",
                                                "train.max_nonfinite_steps",
                                                "train.export_final",
                                                "train.export_dtype",
                                                "train.export_tokenizer",
                                                "train.peak_gflops",
                                                "ckpt.*",
                                                "run.*",
                                                "model.path",
                                                "model.reference_path",
                                                "model.reshard_after_forward",
                                                "dist.*",
                                                "eval.*",
                                                "model.prefetch",
                                                "data.micro_batch",
                                                "data.grad_accum",
                                                "data.train",
                                                "data.eval",
                                                "data.layout",
                                                "data.allow_tokenizer_mismatch"};
  return keys;
}

bool key_matches(const std::string& key, const std::string& pattern) {
  if (key == pattern) return true;
  return key.size() > pattern.size() && key.compare(0, pattern.size(), pattern) == 0 &&
         (key[pattern.size()] == '.' || key[pattern.size()] == '[');
}

namespace {

bool resumable(const std::string& key) {
  for (const std::string& k : resumable_keys()) {
    if (k.size() > 2 && k.compare(k.size() - 2, 2, ".*") == 0) {
      if (key_matches(key, k.substr(0, k.size() - 2)) && key != k.substr(0, k.size() - 2)) return true;
    } else if (key == k) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::vector<RunChange> run_changes(const RunFacts& before, const RunFacts& after) {
  std::vector<RunChange> changes;
  auto value = [](const RunFacts& facts, const std::string& key) {
    const auto it = facts.find(key);
    return it == facts.end() ? std::string("(none)") : it->second;
  };
  RunFacts keys = before;
  keys.insert(after.begin(), after.end());
  for (const auto& [key, unused] : keys) {
    const std::string a = value(before, key), b = value(after, key);
    if (a != b) changes.push_back({key, a, b});
  }
  return changes;
}

std::vector<RunChange> check_resume_changes(const std::vector<RunChange>& changes,
                                            const std::vector<std::string>& allowed,
                                            const std::string& checkpoint) {
  std::vector<RunChange> accepted, refused;
  for (const RunChange& c : changes) {
    const bool named = std::any_of(allowed.begin(), allowed.end(),
                                   [&](const std::string& p) { return key_matches(c.key, p); });
    (named || resumable(c.key) ? accepted : refused).push_back(c);
  }
  if (refused.empty()) return accepted;
  std::string list, keys;
  for (const RunChange& c : refused) {
    list += "\n  " + c.text();
    const std::string base = c.key.substr(0, c.key.find('['));
    if (keys.find(" " + base + " ") == std::string::npos) keys += base + " ";
  }
  keys.pop_back();
  throw Error(str_cat(
      "cannot resume from ", checkpoint, ": this run differs from it in ", refused.size(),
      " key(s) that would make it a different experiment:", list, "\nResuming may change only ",
      [] {
        std::string text;
        for (const std::string& k : resumable_keys()) text += (text.empty() ? "" : ", ") + k;
        return text;
      }(),
      " (docs/checkpoints.md). To resume anyway, name the keys: --allow-change ", keys,
      "; to start a new run instead, give another run.dir or --resume never."));
}

}  // namespace kto::train
