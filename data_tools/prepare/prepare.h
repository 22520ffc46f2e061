// kto-data prepare: feedback rows -> tokenized, truncated, shuffled HDF5 dataset files.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kto::data_tools {

struct PrepareOptions {
  std::vector<std::string> inputs;  // JSONL or JSON-array files, optionally .gz
  std::string tokenizer;
  std::string out_dir;
  std::string chat_template = "hh";
  std::string template_file;
  int64_t max_length = 1024;
  int64_t max_prompt_length = 512;
  std::string add_bos = "auto";  // auto | yes | no
  bool append_eos = true;
  std::string eos_token;        // overrides the tokenizer's EOS
  double keep_desirable = 1.0;  // per-class subsampling (the paper's imbalance study)
  double keep_undesirable = 1.0;
  uint64_t seed = 0;
  bool shuffle = true;
  bool keep_pairs = false;  // paired data for DPO-style losses: chosen, rejected adjacent
  // CSFT conditioning (Korbak et al. 2023, as in the HALOs code): "GOOD,BAD" — every prompt ends
  // with GOOD (desirable examples) or BAD (undesirable ones). Each is one token of the tokenizer
  // when it has it (an added/special token), else its text encoding. Empty: none.
  std::string control_tokens;
  double eval_fraction = 0.0;
  int64_t shards = 1;
  double max_error_rate = 0.01;
  int64_t report_errors = 5;                   // first N skipped rows shown with file:line
  int64_t threads = 0;                         // tokenization threads (0: all cores)
  int64_t max_line_bytes = int64_t{32} << 20;  // longer input lines are skipped (line_too_long)
  bool overwrite = false;
};

struct PrepareSummary {
  int64_t rows = 0, rows_skipped = 0;
  std::map<std::string, int64_t> skipped_by_reason;
  std::map<std::string, int64_t> rows_by_format;
  int64_t subsampled_away = 0;
  int64_t examples = 0, desirable = 0, undesirable = 0, tokens = 0;
  int64_t prompt_truncated = 0, completion_truncated = 0;
  int64_t train_examples = 0, eval_examples = 0;
  double lambda_desirable = 1, lambda_undesirable = 1;
  std::vector<std::string> files;  // written, relative to out_dir
};

// Runs the whole preparation; prints progress and the summary. Throws kto::Error (and leaves
// nothing at out_dir) when inputs are unreadable, the error rate exceeds the threshold, or
// writing fails.
PrepareSummary run_prepare(const PrepareOptions& options);

}  // namespace kto::data_tools
