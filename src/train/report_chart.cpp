#include "kto/train/report_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <sstream>

namespace kto::train {

namespace {

// Layout of one chart, in SVG pixels.
constexpr double kWidth = 460, kLeft = 60, kRight = 14, kTop = 30, kPlotHeight = 160;
constexpr double kLegendTop = kTop + kPlotHeight + 42, kLegendRow = 15, kCharWidth = 6;

std::string fixed(double v, int decimals) {
  char text[48];
  std::snprintf(text, sizeof(text), "%.*f", decimals, v);
  return text;
}

// "0.50" -> "0.5", "1.0" -> "1", "5.0e-04" -> "5e-04".
std::string trim_zeros(std::string text) {
  const size_t e = text.find('e');
  std::string mantissa = text.substr(0, e), exponent = e == std::string::npos ? "" : text.substr(e);
  if (mantissa.find('.') != std::string::npos) {
    while (mantissa.back() == '0') mantissa.pop_back();
    if (mantissa.back() == '.') mantissa.pop_back();
  }
  return mantissa + exponent;
}

// SVG coordinates: a tenth of a pixel is plenty.
std::string coord(double v) { return fixed(v, 1); }

// The stretches of consecutive finite values of y, as index ranges [begin, end).
std::vector<std::pair<size_t, size_t>> unbroken(const std::vector<double>& y) {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t i = 0; i < y.size();) {
    if (!std::isfinite(y[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < y.size() && std::isfinite(y[j])) ++j;
    out.emplace_back(i, j);
    i = j;
  }
  return out;
}

// The legend's entries in rows that fit the chart's width: (entry, x, row).
struct Placed {
  const LegendEntry* entry;
  double x;
  int row;
};
std::vector<Placed> place_legend(const std::vector<LegendEntry>& legend) {
  std::vector<Placed> out;
  double x = kLeft;
  int row = 0;
  for (const LegendEntry& e : legend) {
    const double width = 30 + kCharWidth * static_cast<double>(e.label.size());
    if (x + width > kWidth - kRight && x > kLeft) {
      x = kLeft;
      ++row;
    }
    out.push_back({&e, x, row});
    x += width;
  }
  return out;
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int max_ticks, bool integers) {
  max_ticks = std::max(max_ticks, 3);  // a range around 0 needs -s, 0, s
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (lo > hi) std::swap(lo, hi);
  // Equal up to rounding (an EMA of a constant): a constant.
  if (hi - lo <= 1e-9 * std::max(std::abs(lo), std::abs(hi))) {
    lo = hi = (lo + hi) / 2;
    const double d = std::abs(lo) * 0.1;
    if (d == 0) {
      lo = 0, hi = 1;
    } else {
      lo -= d, hi += d;
    }
  }
  // Candidate steps m x 10^k in increasing order, from a tenth of the even split upwards.
  int k = static_cast<int>(std::floor(std::log10((hi - lo) / max_ticks))) - 1;
  if (integers) k = std::max(k, 0);
  const int mantissas[] = {1, 2, 5};
  for (;; ++k) {
    for (int m : mantissas) {
      const double step = m * std::pow(10.0, k);
      const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
      if (last - first + 1 > max_ticks) continue;
      std::vector<double> ticks;
      for (auto i = static_cast<int64_t>(first); i <= static_cast<int64_t>(last); ++i) {
        // i*m / 10^-k is the correctly rounded decimal (0.3, not 0.30000000000000004).
        const double t = k >= 0 ? static_cast<double>(i * m) * std::pow(10.0, k)
                                : static_cast<double>(i * m) / std::pow(10.0, -k);
        ticks.push_back(t == 0 ? 0.0 : t);  // no -0
      }
      return ticks;
    }
  }
}

std::string tick_label(double value, double step) {
  step = std::abs(step);
  if (std::abs(value) <= step * 1e-6 || value == 0) return "0";
  if (step < 1e-3) {
    const int digits = std::max(0, static_cast<int>(std::floor(std::log10(std::abs(value)) + 1e-9) -
                                                    std::floor(std::log10(step) + 1e-9)));
    char text[48];
    std::snprintf(text, sizeof(text), "%.*e", digits, value);
    return trim_zeros(text);
  }
  double scale = 1;
  const char* suffix = "";
  if (step >= 1e9) {
    scale = 1e9, suffix = "G";
  } else if (step >= 1e6) {
    scale = 1e6, suffix = "M";
  } else if (step >= 1e3) {
    scale = 1e3, suffix = "k";
  }
  const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step / scale) + 1e-9)));
  return trim_zeros(fixed(value / scale, decimals)) + suffix;
}

std::vector<double> ema_smooth(const std::vector<double>& values, double weight) {
  // A constant stays exactly constant (TensorBoard does the same), not constant +- rounding.
  bool constant = true;
  for (double v : values) constant &= !std::isfinite(v) || !std::isfinite(values[0]) || v == values[0];
  if (weight <= 0 || constant) return values;
  std::vector<double> out(values.size());
  double last = 0;
  int n = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      out[i] = values[i];
      continue;
    }
    last = last * weight + (1 - weight) * values[i];
    ++n;
    out[i] = last / (1 - std::pow(weight, n));
  }
  return out;
}

std::string html_escape(const std::string& text) {
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

std::string render_chart(const Chart& chart) {
  // What is drawn: per series its raw values and, when smoothed, the smoothed ones.
  std::vector<std::vector<double>> shown;
  double y_lo = INFINITY, y_hi = -INFINITY;
  for (const ChartSeries& s : chart.series) {
    shown.push_back(s.smooth ? ema_smooth(s.y, chart.smoothing) : s.y);
    for (const std::vector<double>* ys : {&s.y, static_cast<const std::vector<double>*>(&shown.back())}) {
      for (double y : *ys) {
        if (std::isfinite(y)) y_lo = std::min(y_lo, y), y_hi = std::max(y_hi, y);
      }
    }
  }
  const std::vector<Placed> legend = place_legend(chart.legend);
  const int rows = legend.empty() ? 0 : legend.back().row + 1;
  const double height = kLegendTop + rows * kLegendRow + 4;
  const double plot_w = kWidth - kLeft - kRight, bottom = kTop + kPlotHeight;
  std::ostringstream svg;
  svg << "<figure class=\"chart\"><svg id=\"chart-" << chart.id << "\" class=\"chart\" viewBox=\"0 0 "
      << kWidth << " " << height << "\" width=\"" << kWidth << "\" height=\"" << height
      << "\" role=\"img\" aria-label=\"" << html_escape(chart.title) << "\">\n"
      << "<text x=\"" << kLeft << "\" y=\"18\" class=\"title\">" << html_escape(chart.title) << "</text>\n";
  if (!std::isfinite(y_lo)) {
    svg << "<text x=\"" << kWidth / 2 << "\" y=\"" << kTop + kPlotHeight / 2
        << "\" class=\"empty\" text-anchor=\"middle\">no data</text></svg></figure>\n";
    return svg.str();
  }
  std::vector<double> y_ticks = nice_ticks(y_lo, y_hi, 6);
  // A constant 1.0 accuracy would get 0.9 .. 1.1: cover up to the ceiling only (a round number,
  // so the ticks end on it).
  if (y_ticks.back() > chart.y_ceiling && y_hi <= chart.y_ceiling)
    y_ticks = nice_ticks(std::min(y_lo, y_ticks.front()), chart.y_ceiling, 6);
  const double y0 = y_ticks.front(), y1 = y_ticks.back();
  const double x_max = chart.x_max > 0 ? chart.x_max : 1;
  auto px = [&](double x) { return kLeft + x / x_max * plot_w; };
  auto py = [&](double y) { return bottom - (y - y0) / (y1 - y0) * kPlotHeight; };

  svg << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << plot_w << "\" height=\""
      << kPlotHeight << "\" class=\"frame\"/>\n";
  const double y_step = y_ticks.size() > 1 ? y_ticks[1] - y_ticks[0] : 1;
  for (double t : y_ticks) {
    svg << "<line x1=\"" << kLeft << "\" x2=\"" << kLeft + plot_w << "\" y1=\"" << coord(py(t)) << "\" y2=\""
        << coord(py(t)) << "\" class=\"grid\"/><text x=\"" << kLeft - 4 << "\" y=\"" << coord(py(t) + 3.5)
        << "\" class=\"tick y\" text-anchor=\"end\">" << tick_label(t, y_step) << "</text>\n";
  }
  const std::vector<double> x_ticks = nice_ticks(0, x_max, 7, /*integers=*/true);
  const double x_step = x_ticks.size() > 1 ? x_ticks[1] - x_ticks[0] : 1;
  for (double t : x_ticks) {
    if (t > x_max * (1 + 1e-9)) break;
    svg << "<line x1=\"" << coord(px(t)) << "\" x2=\"" << coord(px(t)) << "\" y1=\"" << bottom << "\" y2=\""
        << bottom + 4 << "\" class=\"tickmark\"/><text x=\"" << coord(px(t)) << "\" y=\"" << bottom + 15
        << "\" class=\"tick x\" text-anchor=\"middle\">" << tick_label(t, x_step) << "</text>\n";
  }
  svg << "<text x=\"" << kLeft + plot_w / 2 << "\" y=\"" << bottom + 30
      << "\" class=\"axis x\" text-anchor=\"middle\">step</text>\n"
      << "<text x=\"14\" y=\"" << kTop + kPlotHeight / 2 << "\" transform=\"rotate(-90 14 "
      << kTop + kPlotHeight / 2 << ")\" class=\"axis y\" text-anchor=\"middle\">"
      << html_escape(chart.y_label) << "</text>\n";

  auto polylines = [&](const ChartSeries& s, const std::vector<double>& ys, const std::string& cls) {
    for (const auto& [begin, end] : unbroken(ys)) {
      if (end - begin < 2) continue;  // a lone value: its marker below
      svg << "<polyline class=\"" << cls << "\" data-series=\"" << html_escape(s.id)
          << "\" fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.8\""
          << (s.dashed ? " stroke-dasharray=\"5 3\"" : "") << " points=\"";
      for (size_t i = begin; i < end; ++i) svg << coord(px(s.x[i])) << "," << coord(py(ys[i])) << " ";
      svg << "\"/>\n";
    }
  };
  for (size_t k = 0; k < chart.series.size(); ++k) {
    const ChartSeries& s = chart.series[k];
    const bool smoothed = s.smooth && chart.smoothing > 0;
    if (smoothed) polylines(s, s.y, "series raw");
    polylines(s, shown[k], "series");
    const auto stretches = unbroken(shown[k]);
    size_t values = 0;
    for (const auto& [begin, end] : stretches) values += end - begin;
    const bool sparse = s.dashed || values <= kSparseSeries;
    for (const auto& [begin, end] : stretches) {
      if (!sparse && end - begin > 1) continue;
      for (size_t i = begin; i < end; ++i) {
        svg << "<circle class=\"series\" data-series=\"" << html_escape(s.id) << "\" cx=\""
            << coord(px(s.x[i])) << "\" cy=\"" << coord(py(shown[k][i])) << "\" r=\"2.6\" fill=\"" << s.color
            << "\"/>\n";
      }
    }
  }
  for (const Placed& p : legend) {
    const double y = kLegendTop + p.row * kLegendRow;
    svg << "<line class=\"key\" x1=\"" << p.x << "\" x2=\"" << p.x + 20 << "\" y1=\"" << y - 3.5 << "\" y2=\""
        << y - 3.5 << "\" stroke=\"" << p.entry->color << "\" stroke-width=\"2\""
        << (p.entry->dashed ? " stroke-dasharray=\"5 3\"" : "") << "/>";
    if (p.entry->dashed)
      svg << "<circle class=\"key\" cx=\"" << p.x + 10 << "\" cy=\"" << y - 3.5 << "\" r=\"2.6\" fill=\""
          << p.entry->color << "\"/>";
    svg << "<text x=\"" << p.x + 25 << "\" y=\"" << y << "\" class=\"legend\">" << html_escape(p.entry->label)
        << "</text>\n";
  }
  svg << "</svg></figure>\n";
  return svg.str();
}

}  // namespace kto::train
