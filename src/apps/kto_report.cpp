// kto-report RUN_DIR (or --run RUN_DIR): the HTML report of a training run (kto-train also writes
// it at the end of training, and when it stops on a signal).
#include <iostream>
#include <vector>

#include "kto/train/report.h"
#include "kto/util/cli.h"

int main(int argc, char** argv) {
  return kto::cli::run_main("kto-report", [&]() -> int {
    // `kto-report RUN_DIR` is `kto-report --run RUN_DIR`.
    std::vector<char*> args_v(argv, argv + argc);
    static char run_flag[] = "--run";
    if (argc == 2 && argv[1][0] != '-') args_v.insert(args_v.begin() + 1, run_flag);
    std::string run_dir;
    kto::cli::Args args(
        "kto-report",
        "Writes RUN_DIR/report.html: a self-contained page with SVG charts of loss, kl, rewards\n"
        "per class, margin, gradient norm, learning rate, throughput and eval accuracy, the run's\n"
        "facts and its resolved config. kto-train writes it at the end of training too.\n"
        "Usage: kto-report RUN_DIR, or kto-report --run RUN_DIR.");
    args.option("--run", &run_dir, "RUN_DIR", "a kto-train run directory (holding metrics.jsonl)",
                kto::cli::required);
    if (!args.parse(static_cast<int>(args_v.size()), args_v.data())) return 0;
    std::cout << kto::train::write_report(run_dir) << "\n";
    return 0;
  });
}
