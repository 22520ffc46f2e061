// The run report: one self-contained HTML page (inline SVG charts, no external resources) with
// the training curves — loss, kl, rewards per class, margin, grad norm, lr, throughput, eval
// accuracy — the run's facts and its resolved config, built from run_dir/metrics.jsonl.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace kto::train {

// Writes run_dir/run.json: the start-up banner's facts (build, world, ranks, model, memory, data,
// batch, loss), in order, for the report.
void write_run_facts(const std::string& run_dir,
                     const std::vector<std::pair<std::string, std::string>>& facts);

// Writes run_dir/report.html and returns its path; throws naming the file on bad input.
std::string write_report(const std::string& run_dir);

}  // namespace kto::train
