// The report page: which metric goes on which chart (train and eval keys, colours), and the page
// around the charts and tables.
#include "kto/train/report.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kto/train/report_chart.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/version.h"
#include "report_run.h"

namespace kto::train {

namespace {

using detail::str_cat;

constexpr const char *kBlue = "#1f6fb4", *kOrange = "#e07b1a", *kGreen = "#2e9a4a", *kRed = "#c43c3c",
                     *kPurple = "#7b4fb0", *kBrown = "#8c564b", *kGrey = "#777777";
// A metric on a chart: its train key and its eval key ("" where the split has none); title and
// y_label of its own chart when runs are overlaid and a chart of several lines is split.
struct Line {
  const char *id, *label, *train_key, *eval_key, *color, *title = "", *y_label = "";
};
struct ChartDef {
  const char *id, *title, *y_label;
  std::vector<Line> lines;
  bool smooth = true;
  double y_ceiling = 1e300;  // accuracies and AUC: 1
};

const std::vector<ChartDef>& chart_defs() {
  static const std::vector<ChartDef> defs = {
      {"loss", "loss", "loss", {{"loss", "loss", "loss", "eval/loss", kBlue}}},
      {"kl", "kl (the reference point z0)", "kl", {{"kl", "kl", "kl", "eval/kl", kBlue}}},
      {"rewards",
       "rewards (beta x log-ratio) per class",
       "reward",
       {{"rewards_desirable", "desirable", "rewards/desirable", "eval/rewards/desirable", kGreen,
         "rewards of desirable examples", "reward"},
        {"rewards_undesirable", "undesirable", "rewards/undesirable", "eval/rewards/undesirable", kRed,
         "rewards of undesirable examples", "reward"}}},
      {"margin",
       "reward margin (desirable - undesirable)",
       "margin",
       {{"margin", "margin", "rewards/margin", "eval/rewards/margin", kBlue}}},
      {"accuracy",
       "eval accuracy (sign(r - z0) vs label) and AUC",
       "accuracy",
       {{"balanced_accuracy", "balanced accuracy", "", "eval/balanced_accuracy", kBlue,
         "eval balanced accuracy (mean of the classes')", "accuracy"},
        {"accuracy", "accuracy", "", "eval/accuracy", kGrey, "eval accuracy (sign(r - z0) vs label)",
         "accuracy"},
        {"accuracy_desirable", "desirable", "", "eval/accuracy/desirable", kGreen,
         "eval accuracy on desirable examples", "accuracy"},
        {"accuracy_undesirable", "undesirable", "", "eval/accuracy/undesirable", kRed,
         "eval accuracy on undesirable examples", "accuracy"},
        {"auc", "AUC", "", "eval/auc", kPurple, "eval AUC of the reward (desirable vs undesirable)", "AUC"},
        {"preference_accuracy", "preference accuracy", "", "eval/preference_accuracy", kBrown,
         "eval preference accuracy (pairs)", "accuracy"}},
       /*smooth=*/false,
       /*y_ceiling=*/1},
      {"grad_norm",
       "gradient norm (before clipping)",
       "norm",
       {{"grad_norm", "grad norm", "grad_norm", "", kBlue}}},
      {"lr", "learning rate", "lr", {{"lr", "lr", "lr", "", kBlue}}, /*smooth=*/false},
      {"throughput", "throughput", "tokens/s", {{"throughput", "tokens/s", "tokens_per_s", "", kBlue}}},
  };
  return defs;
}

// Adds line's train (solid) and eval (dashed) series of `run` where it has values for them.
// Returns {has train, has eval}.
std::pair<bool, bool> add_series(Chart* c, const RunData& run, const Line& line, bool smooth,
                                 const std::string& train_color, const std::string& eval_color) {
  std::pair<bool, bool> added{false, false};
  if (*line.train_key && run.train.has(line.train_key)) {
    c->series.push_back({run.name + ":" + line.train_key, train_color, false, smooth, run.train.steps,
                         run.train.series(line.train_key)});
    added.first = true;
  }
  if (*line.eval_key && run.eval.has(line.eval_key)) {
    c->series.push_back({run.name + ":" + line.eval_key, eval_color, true, false, run.eval.steps,
                         run.eval.series(line.eval_key)});
    added.second = true;
  }
  return added;
}

// An empty chart of def's axes; one of its lines (id, title, y label) when `line` is given.
Chart empty_chart(const ChartDef& def, const Line* line, double x_max, double smoothing) {
  Chart c;
  c.id = line ? line->id : def.id;
  c.title = line ? line->title : def.title;
  c.y_label = line ? line->y_label : def.y_label;
  c.x_max = x_max;
  c.smoothing = smoothing;
  c.y_ceiling = def.y_ceiling;
  return c;
}

// One run: train and eval in two colours, or a colour per line on charts of several.
void add_run(Chart* c, const ChartDef& def, const RunData& run) {
  const bool one = def.lines.size() == 1;
  for (const Line& line : def.lines) {
    const std::string train_color = one ? kBlue : line.color, eval_color = one ? kOrange : line.color;
    const auto [train, eval] = add_series(c, run, line, def.smooth, train_color, eval_color);
    if (train) c->legend.push_back({one ? "train" : line.label, train_color, false});
    if (eval)
      c->legend.push_back({one               ? "eval"
                           : *line.train_key ? str_cat(line.label, " (eval)")
                                             : line.label,
                           eval_color, true});
  }
}

// Several runs: one line of a definition, one colour per run, train solid, eval dashed.
void add_runs(Chart* c, const ChartDef& def, const Line& line, const std::vector<RunData>& runs) {
  bool any_train = false, any_eval = false;
  for (size_t r = 0; r < runs.size(); ++r) {
    const auto [train, eval] = add_series(c, runs[r], line, def.smooth, run_color(r), run_color(r));
    if (train || eval) c->legend.push_back({runs[r].name, run_color(r), !train});
    any_train |= train;
    any_eval |= eval;
  }
  if (any_train && any_eval) {
    c->legend.push_back({"train", kGrey, false});
    c->legend.push_back({"eval", kGrey, true});
  }
}

std::string charts_html(const std::vector<RunData>& runs, double smoothing) {
  double x_max = 0;
  for (const RunData& run : runs) x_max = std::max(x_max, run.last_step());
  if (x_max <= 0) x_max = 1;
  std::string out;
  for (const ChartDef& def : chart_defs()) {
    if (runs.size() == 1 || def.lines.size() == 1) {
      Chart c = empty_chart(def, nullptr, x_max, smoothing);
      if (runs.size() == 1) {
        add_run(&c, def, runs[0]);
      } else {
        add_runs(&c, def, def.lines[0], runs);
      }
      out += render_chart(c);
      continue;
    }
    for (const Line& line : def.lines) {  // runs overlaid: a chart per line that some run has
      Chart c = empty_chart(def, &line, x_max, smoothing);
      add_runs(&c, def, line, runs);
      if (!c.series.empty()) out += render_chart(c);
    }
  }
  return out;
}

}  // namespace

void write_run_facts(const std::string& run_dir,
                     const std::vector<std::pair<std::string, std::string>>& facts) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& [key, value] : facts) j.push_back({key, value});
  write_text_file(join_path(run_dir, "run.json"), j.dump(1) + "\n");
}

std::string write_report(const std::string& run_dir, const ReportOptions& options) {
  return write_report(std::vector<std::string>{run_dir}, join_path(run_dir, "report.html"), options);
}

std::string write_report(const std::vector<std::string>& run_dirs, const std::string& out_path,
                         const ReportOptions& options) {
  if (run_dirs.empty()) throw Error("kto-report: no run directory");
  if (!(options.smoothing >= 0 && options.smoothing < 1))
    throw Error(str_cat("report smoothing ", options.smoothing, ": expected a weight in [0, 1)"));
  std::vector<RunData> runs;
  const std::vector<std::string> names = run_names(run_dirs);
  for (size_t r = 0; r < run_dirs.size(); ++r) {
    runs.push_back(read_run(run_dirs[r]));
    runs.back().name = names[r];
  }
  const bool one = runs.size() == 1;
  std::string title = "kto run report";
  if (!one) title = str_cat("kto report: ", runs.size(), " runs");
  const std::string final_eval = final_eval_table(runs);
  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << title
       << "</title>\n<style>\n"
          "body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}\n"
          "h1{font-size:20px}h2{font-size:16px;margin-top:28px}p.note{font-size:12px;color:#555}\n"
          ".charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}\n"
          "svg.chart{border:1px solid #ddd;background:#fcfcfc}\n"
          ".title{font-size:13px;font-weight:600}.tick,.legend,.axis{font-size:10px;fill:#555}\n"
          ".frame{fill:none;stroke:#bbb}.grid{stroke:#eee}.tickmark{stroke:#bbb}.raw{stroke-opacity:.25}\n"
          ".empty{fill:#999;font-size:12px}p.warning{font-size:13px;color:#a33}\n"
          "table{border-collapse:collapse;margin-bottom:12px}th,td{text-align:left;padding:3px 10px;"
          "border-bottom:1px solid #eee;font-size:13px;vertical-align:top}\n"
          ".swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}\n"
          "details{margin:8px 0}summary{cursor:pointer;font-weight:600}\n"
          "pre{background:#f6f6f6;padding:10px;font-size:12px;overflow:auto}\n"
          "</style></head><body>\n<h1>"
       << html_escape(title) << "</h1>\n<h2>Training curves</h2>\n<p class=\"note\">"
       << (options.smoothing > 0 ? str_cat("Train curves smoothed (EMA weight ", options.smoothing,
                                           ", as TensorBoard's slider), the raw values faint behind")
                                 : std::string("Train curves unsmoothed"))
       << "; eval curves dashed with markers, never smoothed. A break in a line: a step without that "
          "value (e.g. no example of the class in the step).</p>\n<div class=\"charts\">\n"
       << charts_html(runs, options.smoothing) << "</div>\n";
  if (!final_eval.empty()) html << "<h2>Final evaluation</h2>\n" << final_eval;
  if (one && !runs[0].samples.empty()) {
    html << "<h2>Samples</h2>\n<p class=\"note\">The policy's completions of fixed eval prompts "
            "(eval.samples) at "
            "each sampled step — step 0 is the reference's own — with the example's label and the reward the "
            "policy assigns (beta log pi/pi_ref).</p>\n"
         << samples_table(runs[0]);
  }
  if (one) {
    html << "<h2>Run</h2>\n"
         << facts_table(runs[0]) << segments_table(runs[0]) << "<h2>Resolved config</h2>\n<pre>"
         << html_escape(runs[0].config.empty() ? "(no config.yaml)" : runs[0].config) << "</pre>\n";
  } else {
    html << "<h2>Runs</h2>\n" << runs_table(runs);
  }
  html << "<p class=\"note\">report written by " << html_escape(build_summary())
       << "</p>\n"
          // Records, for each chart, the size of what the browser actually drew (read back by tests).
          "<script>for(const s of document.querySelectorAll('svg.chart')){let w=0,h=0;"
          "for(const p of s.querySelectorAll('.series')){const "
          "b=p.getBBox();w=Math.max(w,b.width);h=Math.max(h,b.height);}"
          "s.setAttribute('data-drawn',w+'x'+h);}</script>\n"
          "</body></html>\n";
  write_text_file(out_path, html.str());
  return out_path;
}

}  // namespace kto::train
