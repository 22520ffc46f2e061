// kto-report RUN_DIR... : the HTML report of one training run, or of several overlaid (kto-train
// also writes a run's report at the end of training, and when it stops on a signal).
#include <cstring>
#include <iostream>
#include <vector>

#include "kto/train/report.h"
#include "kto/util/cli.h"

int main(int argc, char** argv) {
  return kto::cli::run_main("kto-report", [&]() -> int {
    // `kto-report A B` is `kto-report --run A --run B`: every argument that is neither an option
    // nor an option's value is a run directory.
    static char run_flag[] = "--run";
    std::vector<char*> args_v = {argv[0]};
    for (int i = 1; i < argc; ++i) {
      const bool takes_value = !std::strcmp(argv[i], "--run") || !std::strcmp(argv[i], "--out") ||
                               !std::strcmp(argv[i], "--smoothing");
      if (argv[i][0] != '-') args_v.push_back(run_flag);
      args_v.push_back(argv[i]);
      if (takes_value && i + 1 < argc) args_v.push_back(argv[++i]);
    }
    std::vector<std::string> run_dirs;
    std::string out, smoothing = "0.6";
    kto::cli::Args args(
        "kto-report",
        "Writes the HTML report of a kto-train run: one self-contained page (no network) with SVG\n"
        "charts of loss, kl, rewards per class, margin, eval accuracies and AUC, gradient norm,\n"
        "learning rate and throughput (eval beside train), the final eval metrics, the run's facts,\n"
        "its segments with their wall times, and its resolved config. kto-train writes it at the end\n"
        "of training. Several run directories: one page, one colour per run, their final eval\n"
        "metrics side by side. `kto-report A B` is `kto-report --run A --run B`.");
    args.list("--run", &run_dirs, "RUN_DIR", "a kto-train run directory (holding metrics.jsonl)")
        .option("--out", &out, "FILE", "the page (default RUN_DIR/report.html; several runs: ./report.html)")
        .option("--smoothing", &smoothing, "ALPHA",
                "EMA weight of the train curves, 0 (raw) to 0.99 (default 0.6)")
        .epilog(
            "--smoothing is TensorBoard's smoothing slider: each train curve is drawn as its exponential\n"
            "moving average, the raw values faint behind it; eval curves are drawn as they are.");
    if (!args.parse(static_cast<int>(args_v.size()), args_v.data())) return 0;
    if (run_dirs.empty()) throw kto::cli::UsageError("kto-report: give a RUN_DIR (see --help)");
    kto::train::ReportOptions options;
    size_t used = 0;
    try {
      options.smoothing = std::stod(smoothing, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != smoothing.size() || !(options.smoothing >= 0 && options.smoothing < 1))
      throw kto::cli::UsageError("kto-report: --smoothing: expected a weight in [0, 1), got '" + smoothing +
                                 "'");
    if (out.empty()) out = run_dirs.size() == 1 ? run_dirs[0] + "/report.html" : "report.html";
    std::cout << kto::train::write_report(run_dirs, out, options) << "\n";
    return 0;
  });
}
