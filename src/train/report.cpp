#include "kto/train/report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/version.h"

namespace kto::train {

namespace {

using json = nlohmann::json;
using detail::str_cat;

struct Series {
  std::string label, color;
  std::vector<std::pair<double, double>> points;  // (step, value)
};

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string number(double v) {
  char text[32];
  const double a = std::abs(v);
  std::snprintf(text, sizeof(text), a != 0 && (a < 1e-3 || a >= 1e5) ? "%.2e" : "%.4g", v);
  return text;
}

// One SVG line chart: axes with 5 ticks each, a polyline per series, a legend.
std::string chart(const std::string& id, const std::string& title, const std::vector<Series>& series) {
  constexpr double W = 460, H = 230, left = 62, right = 12, top = 28, bottom = 34;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Series& s : series) {
    for (const auto& [x, y] : s.points) {
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  std::ostringstream svg;
  svg << "<figure class=\"chart\"><svg id=\"chart-" << id << "\" class=\"chart\" viewBox=\"0 0 " << W << " "
      << H << "\" width=\"" << W << "\" height=\"" << H << "\" role=\"img\" aria-label=\"" << escape(title)
      << "\">\n";
  svg << "<text x=\"" << left << "\" y=\"16\" class=\"title\">" << escape(title) << "</text>\n";
  if (!std::isfinite(x0)) {
    svg << "<text x=\"" << W / 2 << "\" y=\"" << H / 2
        << "\" class=\"empty\" text-anchor=\"middle\">no data</text></svg></figure>\n";
    return svg.str();
  }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) {
    y0 -= std::max(1e-12, std::abs(y0) * 0.1);
    y1 += std::max(1e-12, std::abs(y1) * 0.1);
  }
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (W - left - right); };
  auto py = [&](double y) { return H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom); };
  svg << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << W - left - right << "\" height=\""
      << H - top - bottom << "\" class=\"frame\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double fy = y0 + (y1 - y0) * i / 4.0, fx = x0 + (x1 - x0) * i / 4.0;
    svg << "<line x1=\"" << left << "\" x2=\"" << W - right << "\" y1=\"" << py(fy) << "\" y2=\"" << py(fy)
        << "\" class=\"grid\"/><text x=\"" << left - 4 << "\" y=\"" << py(fy) + 4
        << "\" class=\"tick\" text-anchor=\"end\">" << number(fy) << "</text>\n";
    svg << "<text x=\"" << px(fx) << "\" y=\"" << H - bottom + 14
        << "\" class=\"tick\" text-anchor=\"middle\">" << number(std::round(fx)) << "</text>\n";
  }
  svg << "<text x=\"" << (left + W - right) / 2 << "\" y=\"" << H - 4
      << "\" class=\"axis\" text-anchor=\"middle\">step</text>\n";
  double legend_x = left + 8;
  for (const Series& s : series) {
    if (s.points.empty()) continue;
    svg << "<polyline class=\"series\" fill=\"none\" stroke=\"" << s.color
        << "\" stroke-width=\"1.8\" points=\"";
    for (const auto& [x, y] : s.points) svg << px(x) << "," << py(y) << " ";
    svg << "\"/>\n";
    if (s.points.size() == 1) {
      svg << "<circle cx=\"" << px(s.points[0].first) << "\" cy=\"" << py(s.points[0].second)
          << "\" r=\"3\" fill=\"" << s.color << "\"/>\n";
    }
    if (series.size() > 1) {
      svg << "<rect x=\"" << legend_x << "\" y=\"" << top + 6 << "\" width=\"10\" height=\"3\" fill=\""
          << s.color << "\"/><text x=\"" << legend_x + 14 << "\" y=\"" << top + 11 << "\" class=\"legend\">"
          << escape(s.label) << "</text>\n";
      legend_x += 24 + 6.5 * static_cast<double>(s.label.size());
    }
  }
  svg << "</svg></figure>\n";
  return svg.str();
}

}  // namespace

void write_run_facts(const std::string& run_dir,
                     const std::vector<std::pair<std::string, std::string>>& facts) {
  json j = json::array();
  for (const auto& [key, value] : facts) j.push_back({key, value});
  write_text_file(join_path(run_dir, "run.json"), j.dump(1) + "\n");
}

std::string write_report(const std::string& run_dir) {
  const std::string metrics_path = join_path(run_dir, "metrics.jsonl");
  if (!path_exists(metrics_path))
    throw Error(run_dir + ": no metrics.jsonl (is it a kto-train run directory?)");
  std::vector<json> train, eval;
  std::ifstream in(metrics_path);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      // A last line without its newline is a record kto-train is still writing: not yet part
      // of the run.
      if (in.eof()) break;
      throw Error(str_cat(metrics_path, ":", line_no, ": not valid JSON: ", e.what()));
    }
    (j.value("split", "train") == "eval" ? eval : train).push_back(std::move(j));
  }
  auto series = [](const std::vector<json>& rows, const std::string& key, const std::string& label,
                   const std::string& color) {
    Series s{label, color, {}};
    for (const json& r : rows) {
      if (r.contains(key) && r[key].is_number() && r.contains("step"))
        s.points.emplace_back(r["step"].get<double>(), r[key].get<double>());
    }
    return s;
  };
  const std::string blue = "#1f6fb4", orange = "#e07b1a", green = "#2e9a4a", red = "#c43c3c";
  std::ostringstream charts;
  charts << chart("loss", "loss",
                  {series(train, "loss", "train", blue), series(eval, "eval/loss", "eval", orange)});
  charts << chart("kl", "kl (reference point z0)", {series(train, "kl", "kl", blue)});
  charts << chart("rewards", "rewards (beta * log-ratio) per class",
                  {series(train, "rewards/desirable", "desirable", green),
                   series(train, "rewards/undesirable", "undesirable", red)});
  charts << chart("margin", "reward margin (desirable - undesirable)",
                  {series(train, "rewards/margin", "margin", blue)});
  charts << chart("grad_norm", "gradient norm (before clipping)",
                  {series(train, "grad_norm", "grad norm", blue)});
  charts << chart("lr", "learning rate", {series(train, "lr", "lr", blue)});
  charts << chart("throughput", "throughput (tokens/s)", {series(train, "tokens_per_s", "tokens/s", blue)});
  charts << chart("accuracy", "eval accuracy (sign(r - z0) vs label)",
                  {series(eval, "eval/accuracy", "accuracy", green)});

  std::ostringstream facts;
  auto fact = [&](const std::string& k, const std::string& v) {
    facts << "<tr><th>" << escape(k) << "</th><td>" << escape(v) << "</td></tr>\n";
  };
  fact("run directory", run_dir);
  const std::string run_facts = join_path(run_dir, "run.json");
  if (path_exists(run_facts)) {
    try {
      for (const json& kv : json::parse(read_text_file(run_facts)))
        fact(kv.at(0).get<std::string>(), kv.at(1).get<std::string>());
    } catch (const json::exception& e) {
      throw Error(str_cat(run_facts, ": not a list of [key, value] pairs: ", e.what()));
    }
  }
  fact("steps logged", std::to_string(train.size()));
  if (!train.empty()) {
    const json& last = train.back();
    for (const char* k : {"loss", "kl", "rewards/desirable", "rewards/undesirable", "rewards/margin",
                          "grad_norm", "tokens_per_s", "mfu", "peak_rss_mib"}) {
      if (last.contains(k) && last[k].is_number())
        fact(std::string("last ") + k, number(last[k].get<double>()));
    }
  }
  if (!eval.empty() && eval.back().contains("eval/accuracy"))
    fact("last eval accuracy", number(eval.back()["eval/accuracy"].get<double>()));
  fact("report written by", build_summary());
  const std::string config_path = join_path(run_dir, "config.yaml");
  const std::string config = path_exists(config_path) ? read_text_file(config_path) : "(no config.yaml)";

  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kto run "
          "report</title>\n<style>\n"
          "body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}\n"
          "h1{font-size:20px}h2{font-size:16px;margin-top:28px}\n"
          ".charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}\n"
          "svg.chart{border:1px solid #ddd;background:#fcfcfc}\n"
          ".title{font-size:13px;font-weight:600}.tick,.legend,.axis{font-size:10px;fill:#555}\n"
          ".frame{fill:none;stroke:#bbb}.grid{stroke:#eee}.empty{fill:#999;font-size:12px}\n"
          "table{border-collapse:collapse}th,td{text-align:left;padding:3px 10px;border-bottom:1px solid "
          "#eee;font-size:13px}\n"
          "pre{background:#f6f6f6;padding:10px;font-size:12px;overflow:auto}\n"
          "</style></head><body>\n<h1>kto run report</h1>\n"
       << "<h2>Training curves</h2>\n<div class=\"charts\">\n"
       << charts.str() << "</div>\n"
       << "<h2>Run</h2>\n<table>\n"
       << facts.str() << "</table>\n"
       << "<h2>Resolved config</h2>\n<pre>" << escape(config)
       << "</pre>\n"
       // Records, for each chart, the size of what the browser actually drew (read back by tests).
       << "<script>for(const s of document.querySelectorAll('svg.chart')){let w=0,h=0;"
          "for(const p of s.querySelectorAll('polyline,circle')){const "
          "b=p.getBBox();w=Math.max(w,b.width);h=Math.max(h,b.height);}"
          "s.setAttribute('data-drawn',w+'x'+h);}</script>\n"
       << "</body></html>\n";
  const std::string out = join_path(run_dir, "report.html");
  write_text_file(out, html.str());
  return out;
}

}  // namespace kto::train
