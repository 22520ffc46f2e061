// kto-report as a user meets it: the page of a real kto-train run and of two runs overlaid, as
// headless Chromium draws them — the DOM after the page's script (every chart drawn, axis labels,
// legend entries) and a screenshot, decoded and checked for what it shows. The page's pieces
// from exactly known inputs: tests/unit/test_report.cpp.
// ATen (through runs.h) brings LibTorch's glog, whose CHECK would replace Catch's if it came
// after catch.hpp: included first, Catch's CHECK wins.
#include <ATen/core/Tensor.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <map>
#include <regex>
#include <sstream>

#include "kto/util/files.h"
#include "runs.h"
#include "test_support.h"

using Catch::Matchers::Contains;

namespace {

std::string train_bin() { return kto::test::bin_dir() + "/kto-train"; }
std::string report_bin() { return kto::test::bin_dir() + "/kto-report"; }

// The browser: Chromium, or the test is Skipped.
std::string chromium() {
  for (const char* b : {"chromium", "chromium-browser", "google-chrome"}) {
    if (kto::test::have_program(b)) return b;
  }
  kto::test::skip_test("no Chromium to render the report (scripts/install-deps.sh installs it)");
}

// Runs headless Chromium on file://page with `what` (--dump-dom, --screenshot=...); its stdout
// comes back, its stderr is shown if it fails. (--disable-dev-shm-usage: containers often have
// a tiny /dev/shm.)
std::string run_chromium(const std::string& page, const std::string& what, const std::string& scratch) {
  const std::string profile = scratch + "/chromium-profile", errors = scratch + "/chromium.stderr";
  std::string out;
  const int status = kto::test::run_command(
      "timeout 120 " + chromium() +
          " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking"
          " --disable-component-update --disable-sync --no-first-run --hide-scrollbars"
          " --force-device-scale-factor=1 --user-data-dir=" +
          profile + " " + what + " file://" + page + " 2>" + errors,
      &out);
  if (status != 0)
    FAIL("chromium " << what << ": status " << status << "\n"
                     << (kto::path_exists(errors) ? kto::read_text_file(errors) : ""));
  return out;
}

// An 8-bit RGB(A) PNG, decoded: the pixels as RGB.
struct Image {
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

uint32_t big_endian(const std::string& b, size_t at) {
  return static_cast<uint32_t>(static_cast<uint8_t>(b[at])) << 24 |
         static_cast<uint32_t>(static_cast<uint8_t>(b[at + 1])) << 16 |
         static_cast<uint32_t>(static_cast<uint8_t>(b[at + 2])) << 8 | static_cast<uint8_t>(b[at + 3]);
}

// Decodes a PNG file (chunks, zlib, the five row filters; no interlacing) with Catch checks.
Image read_png(const std::string& path) {
  const std::string b = kto::test::read_bytes(path);
  REQUIRE(b.size() > 33);
  REQUIRE(b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  Image img;
  int channels = 0;
  std::string idat;
  for (size_t at = 8; at + 12 <= b.size();) {
    const uint32_t length = big_endian(b, at);
    const std::string type = b.substr(at + 4, 4);
    REQUIRE(at + 12 + length <= b.size());
    if (type == "IHDR") {
      img.width = big_endian(b, at + 8);
      img.height = big_endian(b, at + 12);
      const int depth = static_cast<uint8_t>(b[at + 16]), color = static_cast<uint8_t>(b[at + 17]);
      INFO("bit depth " << depth << ", colour type " << color);
      REQUIRE(depth == 8);
      REQUIRE((color == 2 || color == 6));
      REQUIRE(b[at + 20] == 0);  // not interlaced
      channels = color == 6 ? 4 : 3;
    } else if (type == "IDAT") {
      idat += b.substr(at + 8, length);
    }
    at += 12 + length;
  }
  REQUIRE(channels > 0);
  const size_t stride = static_cast<size_t>(img.width) * channels;
  std::vector<uint8_t> raw((stride + 1) * img.height);
  uLongf raw_size = raw.size();
  REQUIRE(uncompress(raw.data(), &raw_size, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) ==
          Z_OK);
  REQUIRE(raw_size == raw.size());
  std::vector<uint8_t> prev(stride, 0), row(stride);
  img.rgb.reserve(static_cast<size_t>(img.width) * img.height * 3);
  for (uint32_t y = 0; y < img.height; ++y) {
    const uint8_t filter = raw[y * (stride + 1)];
    const uint8_t* in = &raw[y * (stride + 1) + 1];
    REQUIRE(filter <= 4);
    for (size_t i = 0; i < stride; ++i) {
      const int a = i >= static_cast<size_t>(channels) ? row[i - channels] : 0, up = prev[i];
      const int c = i >= static_cast<size_t>(channels) ? prev[i - channels] : 0;
      const int p = a + up - c, pa = std::abs(p - a), pb = std::abs(p - up), pc = std::abs(p - c);
      const int paeth = pa <= pb && pa <= pc ? a : (pb <= pc ? up : c);
      const int predictor = filter == 0   ? 0
                            : filter == 1 ? a
                            : filter == 2 ? up
                            : filter == 3 ? (a + up) / 2
                                          : paeth;
      row[i] = static_cast<uint8_t>(in[i] + predictor);
    }
    for (size_t x = 0; x < img.width; ++x)
      img.rgb.insert(img.rgb.end(), &row[x * channels], &row[x * channels] + 3);
    prev = row;
  }
  return img;
}

// Pixels within `tolerance` of #rrggbb in every channel; pixels that are not (nearly) white.
size_t pixels_near(const Image& img, const std::string& hex, int tolerance = 40) {
  const int r = std::stoi(hex.substr(1, 2), nullptr, 16), g = std::stoi(hex.substr(3, 2), nullptr, 16),
            b = std::stoi(hex.substr(5, 2), nullptr, 16);
  size_t n = 0;
  for (size_t i = 0; i + 2 < img.rgb.size(); i += 3) {
    n += std::abs(img.rgb[i] - r) <= tolerance && std::abs(img.rgb[i + 1] - g) <= tolerance &&
         std::abs(img.rgb[i + 2] - b) <= tolerance;
  }
  return n;
}
size_t ink_pixels(const Image& img) {
  size_t n = 0;
  for (size_t i = 0; i + 2 < img.rgb.size(); i += 3)
    n += std::min({img.rgb[i], img.rgb[i + 1], img.rgb[i + 2]}) < 230;
  return n;
}

// The SVG of chart-<id> in a page or DOM ("" if absent).
std::string chart_svg(const std::string& html, const std::string& id) {
  const size_t begin = html.find("<svg id=\"chart-" + id + "\"");
  if (begin == std::string::npos) return "";
  return html.substr(begin, html.find("</svg>", begin) - begin);
}

// Renders the report in Chromium and checks what it drew: each chart of `charts` has a curve
// across its plot, its axis labels and the legend entries `legend`; the screenshot is a PNG of
// the window's size, not blank, and shows each colour of `colors` in more pixels than its legend
// keys take: curves.
// Returns the DOM.
std::string check_rendered(const std::string& page, const std::string& scratch,
                           const std::vector<std::string>& charts, const std::vector<std::string>& legend,
                           const std::vector<std::pair<std::string, size_t>>& colors) {
  const std::string dom = run_chromium(page, "--dump-dom", scratch);
  // The page's script records the size of what the browser drew in each chart as data-drawn.
  std::map<std::string, std::pair<double, double>> drawn;
  const std::regex svg("<svg[^>]*id=\"chart-([a-z_]+)\"[^>]*data-drawn=\"([0-9.]+)x([0-9.]+)\"");
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), svg); it != std::sregex_iterator(); ++it)
    drawn[(*it)[1]] = {std::stod((*it)[2]), std::stod((*it)[3])};
  INFO(dom.substr(0, 4000));
  for (const std::string& chart : charts) {
    INFO(chart);
    REQUIRE(drawn.count(chart) == 1);
    CHECK(drawn[chart].first > 50);  // a curve across the plot
    const std::string s = chart_svg(dom, chart);
    CHECK_THAT(s, Contains("class=\"axis x\" text-anchor=\"middle\">step</text>"));
    CHECK(std::regex_search(s, std::regex("class=\"axis y\" text-anchor=\"middle\">[A-Za-z/ ]+</text>")));
    for (const std::string& entry : legend) CHECK_THAT(s, Contains("class=\"legend\">" + entry + "</text>"));
  }

  const std::string png = scratch + "/report.png";
  const uint32_t width = 1280, height = 1400;
  run_chromium(
      page, "--window-size=" + std::to_string(width) + "," + std::to_string(height) + " --screenshot=" + png,
      scratch);
  const Image img = read_png(png);
  CHECK(img.width == width);
  CHECK(img.height == height);
  const size_t ink = ink_pixels(img);
  INFO(ink << " of " << width * height << " pixels not white");
  CHECK(ink > width * height / 100);  // text, frames and curves: not a blank page
  for (const auto& [color, at_least] : colors) {
    // A legend key is ~50 pixels of its colour, a table's swatch 100; a curve across a plot,
    // ~400 dashed and ~800 solid.
    INFO(color);
    CHECK(pixels_near(img, color) > at_least);
  }
  return dom;
}

}  // namespace

TEST_CASE("kto-report: a self-contained page whose charts headless Chromium draws, none empty",
          "[e2e][operate][report]") {
  kto::test::SyntheticTask task({}, /*with_eval=*/true);
  const std::string run = task.run();
  std::string log;
  REQUIRE(kto::test::run_command(
              train_bin() + train_args(task, run, {"train.steps=20", "train.eval_every=5"}), &log) == 0);
  CHECK_THAT(log, Contains("report: " + run + "/report.html"));
  REQUIRE(std::remove((run + "/report.html").c_str()) == 0);
  REQUIRE(kto::test::run_command(report_bin() + " " + run, &log) == 0);  // RUN_DIR form
  CHECK_THAT(log, Contains(run + "/report.html"));
  const std::string html = kto::read_text_file(run + "/report.html");
  // Self-contained: nothing fetched from anywhere.
  CHECK(html.find("src=\"http") == std::string::npos);
  CHECK(html.find("href=\"http") == std::string::npos);
  CHECK_THAT(html, Contains("Resolved config") && Contains("world") && Contains("lambda_D"));
  CHECK_THAT(html, Contains("<h2>Final evaluation</h2>") && Contains("<th>eval/loss</th>"));
  CHECK(std::regex_search(html, std::regex("<th>last MFU</th><td>[0-9.]+%</td>")));
  // Eval beside train on loss, kl, rewards and margin.
  for (const char* chart : {"loss", "kl", "rewards", "margin"})
    CHECK_THAT(chart_svg(html, chart), Contains("stroke-dasharray"));

  const std::string dom =
      check_rendered(run + "/report.html", task.dir.path(),
                     {"loss", "kl", "rewards", "margin", "grad_norm", "lr", "throughput", "accuracy"}, {},
                     {{"#1f6fb4", 2000}, {"#e07b1a", 500}});  // train (6 charts), eval (3, dashed)
  for (const char* entry : {"train", "eval"})
    CHECK_THAT(chart_svg(dom, "loss"), Contains(">" + std::string(entry) + "</text>"));
  CHECK_THAT(chart_svg(dom, "rewards"),
             Contains(">desirable</text>") && Contains(">undesirable (eval)</text>"));
  CHECK_THAT(chart_svg(dom, "accuracy"), Contains("class=\"legend\">accuracy</text>"));
}

TEST_CASE("kto-report RUN_A RUN_B: two runs overlaid, one colour each, their final eval side by side",
          "[e2e][operate][report]") {
  kto::test::SyntheticTask task({}, /*with_eval=*/true);
  const std::string a = task.dir.file("beta_0.1"), b = task.dir.file("beta_0.5"),
                    out = task.dir.file("both.html");
  std::string log;
  for (const auto& [dir, beta] : {std::pair{a, "0.1"}, std::pair{b, "0.5"}}) {
    REQUIRE(kto::test::run_command(train_bin() + train_args(task, dir,
                                                            {"train.steps=20", "train.eval_every=5",
                                                             std::string("loss.beta=") + beta}),
                                   &log) == 0);
  }
  REQUIRE(kto::test::run_command(report_bin() + " " + a + " " + b + " --out " + out + " --smoothing 0.3",
                                 &log) == 0);
  INFO(log);
  CHECK_THAT(log, Contains(out));
  const std::string html = kto::read_text_file(out);
  // The final eval table has a column per run; the runs table tells them apart by their loss.
  CHECK_THAT(html,
             Contains("<th>metric</th><th><span class=\"swatch\" style=\"background:#1f77b4\"></span>beta_0.1"
                      "</th><th><span class=\"swatch\" style=\"background:#ff7f0e\"></span>beta_0.5</th>"));
  CHECK(std::regex_search(html, std::regex("<th>eval/loss</th><td>[0-9.e-]+</td><td>[0-9.e-]+</td>")));
  CHECK_THAT(html, Contains("beta 0.1,") && Contains("beta 0.5,"));
  CHECK_THAT(html, Contains("EMA weight 0.3"));

  check_rendered(out, task.dir.path(),
                 {"loss", "kl", "rewards_desirable", "rewards_undesirable", "margin", "accuracy"},
                 {"beta_0.1", "beta_0.5"}, {{"#1f77b4", 2000}, {"#ff7f0e", 2000}});

  SECTION("bad invocations are usage errors") {
    CHECK(kto::test::run_command(report_bin(), &log) == 2);
    CHECK_THAT(log, Contains("give a RUN_DIR"));
    CHECK(kto::test::run_command(report_bin() + " " + a + " --smoothing 1.5", &log) == 2);
    CHECK_THAT(log, Contains("--smoothing: expected a weight in [0, 1), got '1.5'"));
  }
}

TEST_CASE("kto-report during a run: a record still being written is left out, a damaged one is named",
          "[e2e][operate][report]") {
  kto::test::SyntheticTask task;
  const std::string run = task.run();
  std::string log;
  REQUIRE(kto::test::run_command(train_bin() + train_args(task, run, {"train.steps=4"}), &log) == 0);
  const std::string metrics = kto::read_text_file(run + "/metrics.jsonl");
  kto::write_text_file(run + "/metrics.jsonl", metrics + "{\"step\": 5, \"lo");  // mid-write
  CHECK(kto::test::run_command(report_bin() + " " + run, &log) == 0);
  INFO(log);
  kto::write_text_file(run + "/metrics.jsonl", "{\"step\": 1, \"lo\n" + metrics);
  CHECK(kto::test::run_command(report_bin() + " " + run, &log) == 1);
  CHECK_THAT(log, Contains("metrics.jsonl:1: not valid JSON"));
}

TEST_CASE("eval samples: completions of fixed eval prompts by step, the same at 1 and 2 ranks, in the report",
          "[e2e][operate][report][generate]") {
  kto::test::SyntheticTask task({}, /*with_eval=*/true);
  const std::vector<std::string> sets = {"train.steps=10", "train.eval_every=5", "eval.samples=2",
                                         "eval.max_new_tokens=6", "model.dtype=fp64"};
  const std::string one = task.dir.file("one"), two = task.dir.file("two");
  std::string log;
  REQUIRE(kto::test::run_command(train_bin() + train_args(task, one, sets), &log) == 0);
  INFO(log);
  const int rc = kto::test::run_command(std::string(KTO_MPIEXEC) + " -np 2 --oversubscribe " + train_bin() +
                                            train_args(task, two, sets) + " --set data.micro_batch=4",
                                        &log);
  INFO(log);
  REQUIRE(rc == 0);
  auto lines = [](const std::string& run) {
    std::vector<nlohmann::json> out;
    std::istringstream in(kto::read_text_file(run + "/samples.jsonl"));
    std::string line;
    while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
    return out;
  };
  const auto a = lines(one), b = lines(two);
  REQUIRE(a.size() == 6);  // 2 prompts at steps 0, 5 and 10
  REQUIRE(b.size() == 6);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("line " << i);
    CHECK(a[i]["step"] == std::vector<int>{0, 0, 5, 5, 10, 10}[i]);
    CHECK(a[i]["sample"] == static_cast<int>(i % 2));
    CHECK(a[i]["generated_ids"].size() == 6);
    CHECK(a[i]["generated_ids"] == b[i]["generated_ids"]);  // the sharded models generate the same
    CHECK(a[i]["prompt_ids"] == b[i]["prompt_ids"]);
    CHECK((a[i]["label"] == "desirable" || a[i]["label"] == "undesirable"));
    // Step 0: the policy is the reference, so the implied reward is exactly 0.
    if (a[i]["step"] == 0) CHECK(a[i]["reward"].get<double>() == 0.0);
    CHECK(std::abs(a[i]["reward"].get<double>() - b[i]["reward"].get<double>()) <= 1e-9);
  }
  bool trained = false;  // the policy's answers move with training
  for (size_t i = 4; i < 6; ++i)
    trained =
        trained || a[i]["generated_ids"] != a[i - 4]["generated_ids"] || a[i]["reward"].get<double>() != 0.0;
  CHECK(trained);

  // The report shows them as a table, prompt then completions by step, as Chromium renders it.
  const std::string dom = run_chromium(one + "/report.html", "--dump-dom", task.dir.path());
  CHECK_THAT(dom, Contains("<h2>Samples</h2>") && Contains("class=\"samples\""));
  const std::regex prompt_row("<tr class=\"prompt\">"), completion_row("<tr class=\"completion\">");
  CHECK(std::distance(std::sregex_iterator(dom.begin(), dom.end(), prompt_row), std::sregex_iterator()) == 2);
  CHECK(std::distance(std::sregex_iterator(dom.begin(), dom.end(), completion_row), std::sregex_iterator()) ==
        6);
  CHECK_THAT(dom, Contains("ids: "));  // synthetic data has no tokenizer: the ids are shown
}
