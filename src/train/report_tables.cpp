// The report's tables: the final eval metrics side by side, a run's facts and segments, and the
// row per run of an overlay.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>
#include <sstream>

#include "kto/train/report_chart.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/text_codec.h"
#include "report_run.h"

namespace kto::train {

namespace {

using detail::str_cat;

// One colour per run when runs are overlaid (Tableau 10).
const char* const kRunColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

// The final eval metrics, in the table's order; other eval/ keys follow, sorted.
const char* const kFinalEval[] = {"eval/loss",
                                  "eval/kl",
                                  "eval/rewards/desirable",
                                  "eval/rewards/undesirable",
                                  "eval/rewards/margin",
                                  "eval/accuracy",
                                  "eval/balanced_accuracy",
                                  "eval/accuracy/desirable",
                                  "eval/accuracy/undesirable",
                                  "eval/auc",
                                  "eval/preference_accuracy",
                                  "eval/examples"};

std::string swatch(const std::string& color) {
  return "<span class=\"swatch\" style=\"background:" + color + "\"></span>";
}

std::string cell(const std::string& text) { return "<td>" + html_escape(text) + "</td>"; }

std::string run_state(const RunData& run) {
  return run.segments.empty() ? run.state : run.segments.back().state;
}

}  // namespace

std::string run_color(size_t r) { return kRunColors[r % (sizeof(kRunColors) / sizeof(kRunColors[0]))]; }

// The metrics of each run's last evaluation, side by side ("" when no run has one).
std::string final_eval_table(const std::vector<RunData>& runs) {
  std::vector<std::string> keys;
  std::set<std::string> others;
  for (const char* k : kFinalEval) {
    for (const RunData& run : runs) {
      if (!run.eval.values.empty() && run.eval.values.back().count(k)) {
        keys.push_back(k);
        break;
      }
    }
  }
  for (const RunData& run : runs) {
    if (run.eval.values.empty()) continue;
    for (const auto& [k, v] : run.eval.values.back()) {
      if (k.rfind("eval/", 0) == 0 && std::find(keys.begin(), keys.end(), k) == keys.end()) others.insert(k);
    }
  }
  keys.insert(keys.end(), others.begin(), others.end());
  if (keys.empty()) return "";
  std::ostringstream t;
  t << "<table id=\"final-eval\"><tr><th>metric</th>";
  for (size_t r = 0; r < runs.size(); ++r)
    t << "<th>" << (runs.size() > 1 ? swatch(run_color(r)) : "") << html_escape(runs[r].name) << "</th>";
  t << "</tr>\n<tr><th>step</th>";
  for (const RunData& run : runs)
    t << cell(run.eval.steps.empty() ? "-" : format_number(run.eval.last_step()));
  t << "</tr>\n";
  for (const std::string& k : keys) {
    t << "<tr><th>" << html_escape(k) << "</th>";
    for (const RunData& run : runs) {
      const auto* last = run.eval.values.empty() ? nullptr : &run.eval.values.back();
      t << cell(last && last->count(k) ? format_number(last->at(k)) : "-");
    }
    t << "</tr>\n";
  }
  return t.str() + "</table>\n";
}

std::string segments_table(const RunData& run) {
  std::ostringstream t;
  for (const std::string& note : run.notes) t << "<p class=\"warning\">" << html_escape(note) << "</p>\n";
  if (run.segments.empty()) return t.str();
  t << "<table class=\"segments\"><tr><th>segment</th><th>steps</th><th>world size</th><th>state</th>"
       "<th>started</th><th>wall time</th><th>config</th><th>changes</th></tr>\n";
  for (const Segment& s : run.segments) {
    std::string changes;
    for (const std::string& c : s.changes) changes += (changes.empty() ? "" : "; ") + c;
    t << "<tr>" << cell(std::to_string(s.index)) << cell(str_cat(s.start_step, " \u2192 ", s.end_step))
      << cell(s.world_size > 0 ? std::to_string(s.world_size) : "-") << cell(s.state) << cell(s.started)
      << cell(s.wall_s >= 0 ? format_duration(s.wall_s) : "-") << cell(s.config) << cell(changes)
      << "</tr>\n";
  }
  t << "<tr><th>total</th><td colspan=\"4\"></td>" << cell(format_duration(run.wall_seconds()))
    << "<td colspan=\"2\"></td></tr>\n";
  return t.str() + "</table>\n";
}

// The facts of one run: directory, banner (run.json), state, last train values, wall time.
std::string facts_table(const RunData& run) {
  std::ostringstream t;
  auto fact = [&](const std::string& k, const std::string& v) {
    t << "<tr><th>" << html_escape(k) << "</th>" << cell(v) << "</tr>\n";
  };
  fact("run directory", run.dir);
  if (run.segments.size() > 1 && !run.facts.empty()) {
    const Segment& s = run.segments.back();
    fact("banner", str_cat("of the latest segment (", s.index, ", from step ", s.start_step, ")"));
  }
  for (const auto& [k, v] : run.facts) fact(k, v);
  if (const std::string state = run_state(run); !state.empty()) fact("state", state);
  fact("steps logged",
       str_cat(run.train.steps.size(), " (last step ", format_number(run.train.last_step()), ")"));
  if (!run.train.values.empty()) {
    const auto& last = run.train.values.back();
    for (const char* k : {"loss", "kl", "rewards/desirable", "rewards/undesirable", "rewards/margin",
                          "grad_norm", "tokens_per_s", "peak_rss_mib"}) {
      if (last.count(k)) fact(str_cat("last ", k), format_number(last.at(k)));
    }
    if (last.count("mfu")) {
      char mfu[32];
      std::snprintf(mfu, sizeof(mfu), "%.1f%%", 100 * last.at("mfu"));
      fact("last MFU", mfu);
    }
  }
  if (!run.segments.empty()) {
    fact("wall time",
         str_cat(format_duration(run.wall_seconds()), " in ", run.segments.size(), " segment(s)"));
  } else {
    double step_seconds = 0;
    for (double s : run.train.series("step_seconds")) step_seconds += std::isfinite(s) ? s : 0;
    fact("train time", format_duration(step_seconds) + " (the sum of the step times)");
  }
  return "<table class=\"facts\">\n" + t.str() + "</table>\n";
}

// Several runs: one row each, then each run's facts, segments and config, folded.
std::string runs_table(const std::vector<RunData>& runs) {
  std::ostringstream t;
  t << "<table id=\"runs\"><tr><th>run</th><th>directory</th><th>last step</th><th>state</th>"
       "<th>segments</th><th>wall time</th><th>loss</th></tr>\n";
  for (size_t r = 0; r < runs.size(); ++r) {
    const RunData& run = runs[r];
    std::string loss;
    for (const auto& [k, v] : run.facts) loss = k == "loss" ? v : loss;
    t << "<tr><th>" << swatch(run_color(r)) << html_escape(run.name) << "</th>" << cell(run.dir)
      << cell(format_number(run.last_step())) << cell(run_state(run))
      << cell(run.segments.empty() ? "-" : std::to_string(run.segments.size()))
      << cell(run.segments.empty() ? "-" : format_duration(run.wall_seconds())) << cell(loss) << "</tr>\n";
  }
  t << "</table>\n";
  for (const RunData& run : runs) {
    t << "<details><summary>" << html_escape(run.name) << "</summary>\n"
      << facts_table(run) << segments_table(run) << "<pre>" << html_escape(run.config)
      << "</pre></details>\n";
  }
  return t.str();
}

namespace {

// Text of token ids through the data's tokenizer (kto-data decode), or the ids themselves when
// the tokenizer is not there or its decoding fails.
class SampleText {
 public:
  explicit SampleText(const std::string& tokenizer) {
    if (!tokenizer.empty() && path_exists(tokenizer)) codec_ = std::make_unique<TextCodec>(tokenizer);
  }
  std::string operator()(const std::vector<int64_t>& ids) {
    if (codec_) {
      try {
        return codec_->decode(ids);
      } catch (const std::exception&) {
        codec_.reset();  // ids from then on
      }
    }
    std::string out = "ids:";
    for (int64_t id : ids) out += " " + std::to_string(id);
    return out;
  }

 private:
  std::unique_ptr<TextCodec> codec_;
};

}  // namespace

std::string samples_table(const RunData& run) {
  if (run.samples.empty()) return "";
  SampleText text(run.samples.front().tokenizer);
  std::ostringstream out;
  out << "<table "
         "class=\"samples\"><tr><th>sample</th><th>step</th><th>text</th><th>reward</th><th>end</th></tr>\n";
  int64_t current = -1;
  for (const Sample& s : run.samples) {
    if (s.sample != current) {  // the prompt once, then its completions by step
      current = s.sample;
      out << "<tr class=\"prompt\"><td>" << s.sample << " (example " << s.example << ", "
          << html_escape(s.label) << ")</td><td>prompt</td><td><pre>" << html_escape(text(s.prompt_ids))
          << "</pre></td><td></td><td></td></tr>\n";
    }
    out << "<tr class=\"completion\"><td></td><td>" << s.step << "</td><td><pre>"
        << html_escape(text(s.generated_ids)) << "</pre></td><td>"
        << (s.has_reward ? format_number(s.reward) : "") << "</td><td>" << html_escape(s.finish_reason)
        << "</td></tr>\n";
  }
  out << "</table>\n";
  return out.str();
}

std::string format_number(double v) {
  if (!std::isfinite(v)) return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
  char text[32];
  const double a = std::abs(v);
  if (a >= 1e3 && a < 1e9) {
    std::snprintf(text, sizeof(text), "%.0f", v);  // 16620 tokens/s, not 1.662e+04
  } else {
    std::snprintf(text, sizeof(text), a != 0 && (a < 1e-3 || a >= 1e9) ? "%.3g" : "%.4g", v);
  }
  return text;
}

std::string format_duration(double seconds) {
  char text[48];
  if (seconds < 60) {
    std::snprintf(text, sizeof(text), "%.1f s", seconds);
  } else {
    const auto s = static_cast<int64_t>(std::llround(seconds));
    if (s < 3600) {
      std::snprintf(text, sizeof(text), "%lldm %02llds", static_cast<long long>(s / 60),
                    static_cast<long long>(s % 60));
    } else {
      std::snprintf(text, sizeof(text), "%lldh %02lldm %02llds", static_cast<long long>(s / 3600),
                    static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
    }
  }
  return text;
}

}  // namespace kto::train
