// The run report from hand-written run directories (exactly known inputs): nice ticks, TensorBoard
// smoothing, broken lines and markers, eval beside train, segments and wall times, overlaid runs,
// and errors that name the file and line. The pages in a real browser: tests/e2e/test_report.cpp.
#include <catch2/catch.hpp>
#include <cmath>
#include <regex>

#include "kto/train/report.h"
#include "kto/train/report_chart.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "test_support.h"

using Catch::Matchers::Contains;
using kto::train::nice_ticks;
using kto::train::tick_label;

namespace {

// The SVG of chart-<id> in a page ("" if absent).
std::string chart_svg(const std::string& html, const std::string& id) {
  const size_t begin = html.find("<svg id=\"chart-" + id + "\"");
  if (begin == std::string::npos) return "";
  return html.substr(begin, html.find("</svg>", begin) - begin);
}

// Every match of group 1 of `pattern` in text, in order.
std::vector<std::string> all(const std::string& text, const std::string& pattern) {
  std::vector<std::string> out;
  const std::regex re(pattern);
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1]);
  return out;
}

std::vector<std::string> y_ticks(const std::string& svg) {
  return all(svg, "class=\"tick y\"[^>]*>([^<]*)<");
}
std::vector<std::string> x_ticks(const std::string& svg) {
  return all(svg, "class=\"tick x\"[^>]*>([^<]*)<");
}
size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// A run of 6 steps, evaluated at 0, 3 and 6: step 3 has no desirable example (no
// rewards/desirable, no margin); two segments (steps 0-4 on 2 ranks, 4-6 on 1).
void write_run(const std::string& dir, double beta) {
  kto::make_directories(dir);
  std::string metrics;
  for (int step = 1; step <= 6; ++step) {
    const double loss = 0.69 - 0.02 * step * beta * 10;
    metrics += "{\"split\": \"train\", \"step\": " + std::to_string(step) +
               ", \"loss\": " + std::to_string(loss) + ", \"kl\": " + std::to_string(0.05 * step) +
               ", \"rewards/undesirable\": -0.1, \"lr\": 0.001, \"grad_norm\": 1.5, \"mfu\": 0.3338, "
               "\"tokens_per_s\": 16620.4" +
               (step == 3 ? "" : ", \"rewards/desirable\": 0.2, \"rewards/margin\": 0.3") + "}\n";
    if (step % 3 == 0 || step == 1) {
      const int at = step == 1 ? 0 : step;
      metrics += "{\"split\": \"eval\", \"step\": " + std::to_string(at) +
                 ", \"eval/loss\": " + std::to_string(loss + 0.01) +
                 ", \"eval/kl\": 0.1, \"eval/accuracy\": 0.6, \"eval/balanced_accuracy\": 0.625, "
                 "\"eval/accuracy/desirable\": 0.7, \"eval/accuracy/undesirable\": 0.55, \"eval/auc\": 0.71, "
                 "\"eval/rewards/desirable\": 0.15, \"eval/rewards/undesirable\": -0.05, "
                 "\"eval/rewards/margin\": 0.2, \"eval/new_metric\": 42}\n";
    }
  }
  kto::write_text_file(dir + "/metrics.jsonl", metrics);
  kto::write_text_file(dir + "/run.json", "[[\"world\", \"1 rank(s)\"], [\"loss\", \"kto: beta " +
                                              std::to_string(beta) + "\"]]\n");
  kto::write_text_file(dir + "/config.yaml", "loss: {beta: " + std::to_string(beta) + "}\n");
  kto::write_text_file(
      dir + "/segments.jsonl",
      "{\"segment\": 0, \"start_step\": 0, \"end_step\": 4, \"started\": \"2026-12-02T05:00:00Z\", "
      "\"wall_s\": 123.4, \"world_size\": 2, \"state\": \"stopped\", \"config\": "
      "\"configs/segment_000.yaml\", "
      "\"changes\": []}\n"
      "{\"segment\": 1, \"start_step\": 4, \"end_step\": 6, \"started\": \"2026-12-02T06:00:00Z\", "
      "\"wall_s\": 81.6, \"world_size\": 1, \"state\": \"done\", \"config\": \"configs/segment_001.yaml\", "
      "\"changes\": [\"train.steps: 4 \u2192 6\"]}\n");
}

}  // namespace

TEST_CASE("nice_ticks: multiples of 1, 2 or 5 x 10^k that cover the data", "[report]") {
  CHECK(nice_ticks(0, 0.6176, 6) == std::vector<double>{0, 0.2, 0.4, 0.6, 0.8});
  CHECK(nice_ticks(0.5456, 0.6931, 6) == std::vector<double>{0.5, 0.55, 0.6, 0.65, 0.7});
  CHECK(nice_ticks(-0.3176, 0.21, 6) == std::vector<double>{-0.4, -0.2, 0, 0.2, 0.4});
  // Steps: integers only; the chart keeps those <= the last step.
  CHECK(nice_ticks(0, 150, 7, true) == std::vector<double>{0, 50, 100, 150});
  CHECK(nice_ticks(0, 45, 7, true) == std::vector<double>{0, 10, 20, 30, 40, 50});
  CHECK(nice_ticks(0, 2, 7, true) == std::vector<double>{0, 1, 2});
  // kl (>= 0) never gets a negative tick; a constant or all-zero series gets a readable axis.
  CHECK(nice_ticks(0, 0.31, 6).front() == 0);
  CHECK(nice_ticks(0, 0, 6) == std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1});
  CHECK(nice_ticks(5e-4, 5e-4, 6) == std::vector<double>{4.5e-4, 5e-4, 5.5e-4});
  CHECK(nice_ticks(NAN, 1, 6) == std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1});
  // Equal up to rounding (the EMA of a constant) is a constant too.
  CHECK(nice_ticks(1.4999999999999998, 1.5000000000000002, 6) ==
        std::vector<double>{1.3, 1.4, 1.5, 1.6, 1.7});

  // Over many ranges: at most max_ticks, covering [lo, hi], evenly spaced by 1, 2 or 5 x 10^k.
  for (double lo : {-1234.5, -3.0, -0.02, 0.0, 1e-7, 0.5456, 17.0}) {
    for (double span : {1e-6, 0.003, 0.1475, 1.0, 7.0, 99.0, 12345.0}) {
      for (int max_ticks : {3, 4, 6, 9}) {
        const std::vector<double> t = nice_ticks(lo, lo + span, max_ticks);
        INFO(lo << " + " << span << ", " << max_ticks << " ticks");
        REQUIRE(t.size() >= 2);
        CHECK(t.size() <= static_cast<size_t>(max_ticks));
        CHECK(t.front() <= lo);
        CHECK(t.back() >= lo + span);
        const double step = t[1] - t[0];
        const double mantissa = step / std::pow(10.0, std::floor(std::log10(step) + 1e-6));
        CHECK((std::abs(mantissa - 1) < 1e-6 || std::abs(mantissa - 2) < 1e-6 ||
               std::abs(mantissa - 5) < 1e-6));
        for (size_t i = 1; i < t.size(); ++i) CHECK(t[i] - t[i - 1] == Approx(step).epsilon(1e-6));
      }
    }
  }
}

TEST_CASE("tick_label: the decimals the step needs, no float noise", "[report]") {
  CHECK(tick_label(0.1 + 0.2, 0.1) == "0.3");
  CHECK(tick_label(0.55, 0.05) == "0.55");
  CHECK(tick_label(150, 50) == "150");
  CHECK(tick_label(120000, 20000) == "120k");
  CHECK(tick_label(0, 0.2) == "0");
  CHECK(tick_label(1e-17, 0.2) == "0");
  CHECK(tick_label(4.5e-4, 5e-5) == "4.5e-04");
  CHECK(tick_label(5e-4, 5e-5) == "5e-04");
  CHECK(tick_label(1, 0.2) == "1");
}

TEST_CASE("ema_smooth is TensorBoard's debiased EMA; a missing value stays missing", "[report]") {
  const auto s = kto::train::ema_smooth({1, 2, NAN, 3}, 0.6);
  REQUIRE(s.size() == 4);
  CHECK(s[0] == Approx(1.0));                             // 0.4 / (1 - 0.6)
  CHECK(s[1] == Approx(1.04 / 0.64));                     // (0.6 * 0.4 + 0.4 * 2) / (1 - 0.36)
  CHECK(std::isnan(s[2]));                                // the gap
  CHECK(s[3] == Approx((0.6 * 1.04 + 0.4 * 3) / 0.784));  // continues over it
  CHECK(kto::train::ema_smooth({1, 2, 3}, 0) == std::vector<double>{1, 2, 3});
  for (double v : kto::train::ema_smooth({0.25, 0.25, 0.25}, 0.9)) CHECK(v == Approx(0.25));
}

TEST_CASE("render_chart: a missing value breaks the line, sparse series have markers, the legend is below",
          "[report]") {
  kto::train::Chart c;
  c.id = "t";
  c.x_max = 100;
  c.y_label = "value";
  std::vector<double> x, dense;
  for (int i = 1; i <= 100; ++i) x.push_back(i), dense.push_back(i == 50 ? NAN : (i == 52 ? NAN : 1.0 * i));
  c.series.push_back({"dense", "#111111", false, false, x, dense});
  c.series.push_back({"sparse", "#222222", true, false, {0, 50, 100}, {0.5, NAN, 2}});
  c.legend.push_back({"a train series", "#111111", false});
  const std::string svg = kto::train::render_chart(c);
  // dense: 1-49 and 53-100 are lines, 51 alone is a marker; sparse: three points, one missing.
  CHECK(count(svg, "<polyline class=\"series\" data-series=\"dense\"") == 2);
  CHECK(count(svg, "<circle class=\"series\" data-series=\"dense\"") == 1);
  CHECK(count(svg, "<polyline class=\"series\" data-series=\"sparse\"") == 0);
  CHECK(count(svg, "<circle class=\"series\" data-series=\"sparse\"") == 2);
  CHECK(x_ticks(svg) == std::vector<std::string>{"0", "20", "40", "60", "80", "100"});
  CHECK_THAT(svg, Contains(">step</text>") && Contains(">value</text>"));
  // The legend's text sits below the plot's frame (y = 30 .. 190).
  const std::vector<std::string> legend_y = all(svg, "<text x=\"[0-9.]+\" y=\"([0-9.]+)\" class=\"legend\"");
  REQUIRE(legend_y.size() == 1);
  CHECK(std::stod(legend_y[0]) > 190 + 20);

  SECTION("no values at all: said so") {
    CHECK_THAT(kto::train::render_chart(kto::train::Chart{}), Contains("no data"));
  }
  SECTION("an all-zero series: ticks 0 .. 1, not +-1e-12") {
    c.series = {{"zero", "#111111", false, false, {1, 2, 3}, {0, 0, 0}}};
    CHECK(y_ticks(kto::train::render_chart(c)) ==
          std::vector<std::string>{"0", "0.2", "0.4", "0.6", "0.8", "1"});
  }
  SECTION("a constant accuracy of 1: the axis ends at the quantity's ceiling, not at 1.1") {
    c.y_ceiling = 1;
    c.series = {{"accuracy", "#111111", true, false, {0, 50, 100}, {1, 1, 1}}};
    CHECK(y_ticks(kto::train::render_chart(c)) ==
          std::vector<std::string>{"0.9", "0.92", "0.94", "0.96", "0.98", "1"});
  }
  SECTION("smoothing: the raw values faint behind the smoothed ones") {
    c.smoothing = 0.6;
    c.series[0].smooth = true;
    const std::string smoothed = kto::train::render_chart(c);
    CHECK(count(smoothed, "<polyline class=\"series raw\" data-series=\"dense\"") == 2);
    CHECK(count(smoothed, "<polyline class=\"series\" data-series=\"dense\"") == 2);
  }
}

TEST_CASE("write_report: eval beside train, breaks where a class is absent, segments, MFU in %", "[report]") {
  kto::test::TempDir dir;
  const std::string run = dir.file("beta_0.1");
  write_run(run, 0.1);
  kto::train::ReportOptions raw;
  raw.smoothing = 0;
  REQUIRE(kto::train::write_report(run, raw) == run + "/report.html");
  const std::string html = kto::read_text_file(run + "/report.html");
  CHECK(html.find("http") == std::string::npos);  // self-contained

  // Eval on every chart that has it, train broken at step 3 (no desirable example).
  CHECK_THAT(chart_svg(html, "kl"), Contains("data-series=\"beta_0.1:eval/kl\""));
  CHECK_THAT(chart_svg(html, "loss"), Contains(">train</text>") && Contains(">eval</text>"));
  const std::string rewards = chart_svg(html, "rewards");
  CHECK(count(rewards, "<polyline class=\"series\" data-series=\"beta_0.1:rewards/desirable\"") == 2);
  CHECK(count(rewards, "data-series=\"beta_0.1:eval/rewards/undesirable\"") == 4);  // line + 3 markers
  CHECK_THAT(rewards, Contains(">desirable (eval)</text>"));
  const std::string accuracy = chart_svg(html, "accuracy");
  for (const char* label : {"balanced accuracy", "accuracy", "desirable", "undesirable", "AUC"})
    CHECK_THAT(accuracy, Contains(std::string(">") + label + "</text>"));
  CHECK_THAT(accuracy, !Contains("preference accuracy"));  // not in these records
  // One x axis, 0 .. 6, on every chart; kl starts at 0.
  for (const char* id : {"loss", "kl", "rewards", "margin", "accuracy", "grad_norm", "lr", "throughput"}) {
    INFO(id);
    CHECK(x_ticks(chart_svg(html, id)) == std::vector<std::string>{"0", "1", "2", "3", "4", "5", "6"});
  }
  for (const std::string& t : y_ticks(chart_svg(html, "kl"))) CHECK(t[0] != '-');

  // Tables: final eval (step 6; new metrics too), every segment with its wall time, MFU in %.
  CHECK_THAT(html, Contains("<th>eval/auc</th><td>0.71</td>"));
  CHECK_THAT(html, Contains("<th>eval/new_metric</th><td>42</td>"));
  CHECK_THAT(html, Contains("<th>step</th><td>6</td>"));
  CHECK_THAT(html, Contains("<td>0 \u2192 4</td><td>2</td><td>stopped</td>"));
  CHECK_THAT(html, Contains("<td>4 \u2192 6</td><td>1</td><td>done</td>"));
  CHECK_THAT(html, Contains("<td>2m 03s</td>") && Contains("<td>1m 22s</td>"));
  CHECK_THAT(html, Contains("<td>3m 25s in 2 segment(s)</td>"));  // 123.4 + 81.6 s
  CHECK_THAT(html, Contains("train.steps: 4 \u2192 6"));
  CHECK_THAT(html, Contains("<th>last MFU</th><td>33.4%</td>"));
  CHECK_THAT(html, Contains("<th>last tokens_per_s</th><td>16620</td>"));

  SECTION("smoothing (the default) draws the raw train curves faint behind") {
    kto::train::write_report(run);
    const std::string smoothed = kto::read_text_file(run + "/report.html");
    CHECK_THAT(chart_svg(smoothed, "loss"), Contains("class=\"series raw\" data-series=\"beta_0.1:loss\""));
    CHECK_THAT(chart_svg(smoothed, "loss"),
               !Contains("class=\"series raw\" data-series=\"beta_0.1:eval/loss\""));
    CHECK_THAT(chart_svg(smoothed, "lr"), !Contains("series raw"));  // the schedule is exact
  }
  SECTION("no segments.jsonl (an older run): the train time from the step times") {
    REQUIRE(std::remove((run + "/segments.jsonl").c_str()) == 0);
    kto::train::write_report(run, raw);
    const std::string older = kto::read_text_file(run + "/report.html");
    CHECK_THAT(older, !Contains("segment(s)") && Contains("<th>train time</th>"));
  }
  SECTION("a damaged line of segments.jsonl is left out, with a note naming it") {
    kto::write_text_file(run + "/segments.jsonl",
                         "{\"segment\": 0, \"start_step\": 0, \"end_step\": 4}\n"
                         "{\"segment\": 1, \"start_step\": 4, \"end_step\": \"six\"}\n"
                         "{\"segment\": 2, \"start_step\": 4, \"end_step\": 6, \"wall_s\": 3}\n");
    kto::train::write_report(run, raw);
    const std::string page = kto::read_text_file(run + "/report.html");
    CHECK_THAT(page,
               Contains(run + "/segments.jsonl:2: field 'end_step' is not an integer; the line is left out"));
    CHECK_THAT(page, Contains("<td>0 \u2192 4</td>") && Contains("<td>4 \u2192 6</td>"));
  }
  SECTION("a damaged metrics.jsonl is an error naming its line") {
    kto::write_text_file(run + "/metrics.jsonl", "{\"step\": 1}\n[1, 2]\n{\"step\": 2}\n");
    CHECK_THROWS_WITH(kto::train::write_report(run, raw),
                      Contains(run + "/metrics.jsonl:2: not a JSON object"));
  }
  SECTION("smoothing must be a weight in [0, 1)") {
    kto::train::ReportOptions bad;
    bad.smoothing = 1;
    CHECK_THROWS_WITH(kto::train::write_report(run, bad), Contains("[0, 1)"));
  }
}

TEST_CASE("write_report of several runs: one colour each, named legends, final eval side by side",
          "[report]") {
  kto::test::TempDir dir;
  // Equal basenames are told apart by their parents.
  const std::string a = dir.file("a/run"), b = dir.file("b/run"), out = dir.file("both.html");
  write_run(a, 0.1);
  write_run(b, 0.3);
  REQUIRE(kto::train::write_report({a, b}, out) == out);
  const std::string html = kto::read_text_file(out);
  for (const char* id : {"loss", "kl", "margin", "rewards_desirable", "rewards_undesirable",
                         "balanced_accuracy", "accuracy_desirable", "auc"}) {
    const std::string svg = chart_svg(html, id);
    INFO(id);
    CHECK_THAT(svg, Contains(">a/run</text>") && Contains(">b/run</text>"));
    CHECK_THAT(svg, Contains("stroke=\"#1f77b4\"") && Contains("stroke=\"#ff7f0e\""));
  }
  CHECK(chart_svg(html, "preference_accuracy").empty());  // no run has it
  CHECK_THAT(chart_svg(html, "loss"), Contains(">train</text>") && Contains(">eval</text>"));
  CHECK_THAT(
      html,
      Contains("<th>metric</th><th><span class=\"swatch\" style=\"background:#1f77b4\"></span>a/run</th>"
               "<th><span class=\"swatch\" style=\"background:#ff7f0e\"></span>b/run</th>"));
  CHECK_THAT(html, Contains("<th>eval/auc</th><td>0.71</td><td>0.71</td>"));
  CHECK_THAT(html, Contains("kto: beta 0.100000") && Contains("kto: beta 0.300000"));
}

TEST_CASE("write_report: samples as text through the data's tokenizer, the later line of a step winning",
          "[report][generate]") {
  kto::test::TempDir dir;
  const std::string run = dir.file("run");
  write_run(run, 0.1);
  const std::string tokenizer = kto::test::fixtures_dir() + "/tokenizers/gpt-neox-20b/tokenizer.json";
  // [12092, 1533] is "Hello world" in the NeoX tokenizer; a resumed run wrote step 5 twice.
  kto::write_text_file(
      run + "/samples.jsonl",
      "{\"step\": 0, \"sample\": 0, \"example\": 3, \"label\": \"desirable\", \"prompt_ids\": [12092], "
      "\"generated_ids\": [1533], \"finish_reason\": \"length\", \"reward\": 0, \"tokenizer\": \"" +
          tokenizer +
          "\"}\n"
          "{\"step\": 5, \"sample\": 0, \"example\": 3, \"label\": \"desirable\", \"prompt_ids\": [12092], "
          "\"generated_ids\": [12092], \"finish_reason\": \"eos\", \"reward\": 0.25, \"tokenizer\": \"" +
          tokenizer +
          "\"}\n"
          "{\"step\": 5, \"sample\": 0, \"example\": 3, \"label\": \"desirable\", \"prompt_ids\": [12092], "
          "\"generated_ids\": [1533, 1533], \"finish_reason\": \"length\", \"reward\": 0.5, \"tokenizer\": "
          "\"" +
          tokenizer + "\"}\n");
  // kto-data decodes: the built one, found on PATH (kto-report looks beside itself first).
  const std::string path = kto::test::bin_dir() + ":" + std::getenv("PATH");
  ::setenv("PATH", path.c_str(), 1);
  kto::train::write_report(run);
  const std::string html = kto::read_text_file(run + "/report.html");
  CHECK_THAT(html, Contains("<h2>Samples</h2>"));
  CHECK_THAT(html, Contains("<pre>Hello</pre>") && Contains("<pre> world</pre>") &&
                       Contains("<pre> world world</pre>"));
  CHECK(count(html, "<tr class=\"completion\">") == 2);  // step 5's later line only
  CHECK_THAT(html, Contains("0.5") && Contains("example 3, desirable"));
  CHECK(html.find("<pre>Hello</pre></td><td>0.25") == std::string::npos);
}
