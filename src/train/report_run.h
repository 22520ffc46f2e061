// What the report reads from a run directory — metrics.jsonl (train and eval records), run.json
// (the banner's facts), segments.jsonl (one line per started segment; absent in older runs),
// status.json and config.yaml — and the tables it makes of them. Errors name the file and line.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace kto::train {

// The records of one split, one per step, in step order (a step logged twice: the later record).
struct Records {
  std::vector<double> steps;
  std::vector<std::map<std::string, double>> values;  // non-finite values ("nan", "inf") are NaN

  // key's value at each step: NaN where the record has no (finite) value for it.
  std::vector<double> series(const std::string& key) const;
  bool has(const std::string& key) const;  // a finite value at some step
  double last_step() const { return steps.empty() ? 0 : steps.back(); }
};

struct Segment {
  int64_t index = 0, start_step = 0, end_step = 0, world_size = 0;
  double wall_s = -1;  // < 0: not given
  std::string started, state, config;
  std::vector<std::string> changes;
};

// One line of samples.jsonl (eval.samples): a completion of eval prompt `sample` at `step`.
struct Sample {
  int64_t step = 0, sample = 0, example = 0;
  std::string label, finish_reason, tokenizer;
  std::vector<int64_t> prompt_ids, generated_ids;
  bool has_reward = false;
  double reward = 0;
};

struct RunData {
  std::string dir, name;  // name: what legends and tables call the run
  Records train, eval;
  std::vector<std::pair<std::string, std::string>> facts;  // run.json, in order
  std::vector<Segment> segments;                           // segments.jsonl, in order
  std::string state;                                       // status.json's, or ""
  std::string config;                                      // config.yaml, or ""
  std::vector<Sample> samples;     // samples.jsonl: the last line per (sample, step), by sample then step
  std::vector<std::string> notes;  // problems met that left something out ("FILE:LINE: ...")
  double last_step() const;
  // The sum of the segments' wall times (< 0 without segments.jsonl).
  double wall_seconds() const;
};

// Reads run_dir; name is left empty. Throws kto::Error naming the file (and line) on bad input,
// except in segments.jsonl, whose bad lines are left out with a note.
RunData read_run(const std::string& run_dir);

// What to call each run: the directory's basename; parent/basename for runs whose basenames
// are equal; " (2)", " (3)" ... after names still equal.
std::vector<std::string> run_names(const std::vector<std::string>& run_dirs);

// The report's tables (report_tables.cpp), as HTML.
// The colour of the r-th run when runs are overlaid.
std::string run_color(size_t r);
// Every eval/ metric of each run's last evaluation, a column per run ("" when none has one).
std::string final_eval_table(const std::vector<RunData>& runs);
// One run: directory, banner (run.json), state, last train values (MFU in %), wall time.
std::string facts_table(const RunData& run);
// One run's segments: steps, world size, state, start, wall time, config, changes; the total.
std::string segments_table(const RunData& run);
// One run's samples: per eval prompt its label and text, then its completion at each sampled
// step with the reward the policy assigns; text decoded with the data's tokenizer (kto-data
// decode beside kto-report) where the samples name one that exists, else token ids. "" without samples.
std::string samples_table(const RunData& run);
// Several runs: a row each, then each run's facts, segments and config, folded.
std::string runs_table(const std::vector<RunData>& runs);

// 0.6931, 1.23e-05, 16620: four significant digits, whole numbers from 1000 (three digits in
// exponent form, below 1e-3 and from 1e9).
std::string format_number(double v);
// 12.3 s, 4m 05s, 2h 03m 12s.
std::string format_duration(double seconds);

}  // namespace kto::train
