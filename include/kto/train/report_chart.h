// The report's line charts: round ("nice") axis ticks, the exponential moving average that
// TensorBoard and W&B draw as smoothing, and one inline SVG chart per metric — series broken
// where a value is missing, markers on sparse series, the legend below the plot, not on it.
// Plain C++ (no LibTorch); the page around the charts is built by report.cpp.
#pragma once

#include <string>
#include <vector>

namespace kto::train {

// Round ticks that cover [lo, hi]: the multiples of one step s = 1, 2 or 5 x 10^k (an integer
// when `integers`) from the last one <= lo to the first one >= hi; s is the smallest step that
// gives at most max_ticks (3 or more) of them. So data that is >= 0 never gets a negative tick.
// lo == hi (equal up to 1e-9 relative) widens to lo +- 10% of |lo| ([0, 1] for 0), so a
// constant series gets a readable axis, not +-1e-12; non-finite bounds give [0, 1].
std::vector<double> nice_ticks(double lo, double hi, int max_ticks, bool integers = false);

// A tick's label, with the decimals its axis's tick step needs and no trailing zeros: 0.2 (not
// 0.2000000001), 0.55, 1, 120k, 2.5e-05; 0 is "0".
std::string tick_label(double value, double step);

// TensorBoard's smoothing: s_i = weight * s_(i-1) + (1 - weight) * y_i from s = 0, divided by
// 1 - weight^n (n values so far) so that the start is not pulled towards 0. weight 0 returns
// the values, and so does a constant series; NaN (no value) stays NaN and leaves the average
// untouched. weight is in [0, 1).
std::vector<double> ema_smooth(const std::vector<double>& values, double weight);

struct ChartSeries {
  std::string id;            // data-series attribute, for tests and readers of the SVG
  std::string color;         // CSS colour
  bool dashed = false;       // eval series: dashed, with markers
  bool smooth = false;       // drawn EMA-smoothed (when the chart smooths), the raw values faint behind
  std::vector<double> x, y;  // same length; y NaN = no value at x, the line breaks there
};

struct LegendEntry {
  std::string label, color;
  bool dashed = false;
};

struct Chart {
  std::string id;            // the SVG's id is chart-<id>
  std::string title;         // above the plot
  std::string y_label;       // beside the y axis (x is always "step")
  double x_max = 1;          // x runs over [0, x_max]: the same on every chart of a page
  double smoothing = 0;      // EMA weight for the series marked smooth; 0 = raw
  double y_ceiling = 1e300;  // the largest value the quantity can take (1 for accuracies): no tick above
  std::vector<ChartSeries> series;
  std::vector<LegendEntry> legend;
};

// A series with at most this many values gets a marker on each.
constexpr size_t kSparseSeries = 40;

// <figure><svg id="chart-ID" class="chart" ...>: frame, grid, ticks, axis labels, one polyline
// per unbroken stretch of each series, markers, and the legend in rows below the plot.
std::string render_chart(const Chart& chart);

// Text for HTML (and SVG): < > & " escaped.
std::string html_escape(const std::string& text);

}  // namespace kto::train
