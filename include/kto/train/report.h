// The run report: one self-contained HTML page (inline SVG charts, no external resources) with
// the training curves — loss, kl, rewards per class, margin, eval accuracies, grad norm, lr,
// throughput; eval beside train wherever both exist — the final eval metrics, the run's facts,
// every segment of a resumed run with its wall time, and the resolved config. Built from each
// run directory's metrics.jsonl, run.json, segments.jsonl, status.json and config.yaml; several
// runs are overlaid on one page, one colour per run.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace kto::train {

struct ReportOptions {
  // EMA weight of the train curves, as TensorBoard's smoothing slider (0 = raw, < 1); the raw
  // curve is drawn faint behind. Eval curves (few points) are never smoothed.
  double smoothing = 0.6;
};

// Writes run_dir/run.json: the start-up banner's facts (build, world, ranks, model, memory, data,
// batch, loss), in order, for the report.
void write_run_facts(const std::string& run_dir,
                     const std::vector<std::pair<std::string, std::string>>& facts);

// Writes run_dir/report.html and returns its path; throws naming the file on bad input.
std::string write_report(const std::string& run_dir, const ReportOptions& options = {});

// Writes the report of one or several runs to out_path (several: overlaid, one colour per run,
// their final eval metrics side by side) and returns out_path.
std::string write_report(const std::vector<std::string>& run_dirs, const std::string& out_path,
                         const ReportOptions& options = {});

}  // namespace kto::train
