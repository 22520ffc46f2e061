#include "inputs.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/json.h"
#include "kto/util/log.h"
#include "line_reader.h"
#include "tokenizer/text.h"

namespace kto::data_tools {

using detail::str_cat;
using json = nlohmann::json;

double unit_hash(uint64_t seed, uint64_t stream, uint64_t index) {
  uint64_t z = seed ^ (stream * 0x9E3779B97F4A7C15ull) ^ (index * 0xD1B54A32D192ED03ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

std::string percent(double x) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f%%", 100.0 * x);
  return text;
}

namespace {

// A JSON array file is parsed whole; larger inputs should be JSON lines.
constexpr int64_t kMaxArrayFileBytes = int64_t{1} << 30;

class RowCollector {
 public:
  RowCollector(const PrepareOptions& o, const ChatTemplate& t, PrepareSummary& s) : o_(o), t_(t), s_(s) {}

  void read_file(const std::string& path) {
    LineReader reader(path, o_.max_line_bytes);
    std::string line;
    bool first = true, too_long = false;
    while (reader.next(line, &too_long)) {
      if (too_long) {
        first = false;
        skip({"line_too_long", str_cat("the line is longer than --max-line-bytes (", o_.max_line_bytes, ")")},
             str_cat(path, ":", reader.line_number()));
        continue;
      }
      const size_t start = line.find_first_not_of(" \t\r");
      if (start == std::string::npos) continue;
      if (first && line[start] == '[') {  // a JSON array file, not JSON lines
        read_array(path);
        return;
      }
      first = false;
      add_line(line, str_cat(path, ":", reader.line_number()));
    }
  }

  std::vector<Located>& examples() { return examples_; }
  const std::vector<std::string>& first_errors() const { return first_errors_; }

 private:
  void read_array(const std::string& path) {
    json rows;
    const std::string text = read_whole_file(path, kMaxArrayFileBytes);
    if (!tok::is_valid_utf8(text))
      throw Error(path + ": not valid UTF-8 (a JSON array file must be entirely valid)");
    rows = parse_json(text, path);
    if (!rows.is_array())
      throw Error(path + ": a JSON file of rows must hold an array, got " + json_brief(rows));
    for (size_t i = 0; i < rows.size(); ++i) add_row(rows[i], str_cat(path, "[", i, "]"));
  }

  void add_line(const std::string& line, const std::string& where) {
    if (!tok::is_valid_utf8(line)) {
      skip({"invalid_utf8", "the line holds bytes that are not valid UTF-8"}, where);
      return;
    }
    json row;
    try {
      row = parse_json(line, "the line");
    } catch (const Error& e) {
      skip({"invalid_json", e.what()}, where);
      return;
    }
    add_row(row, where);
  }

  void add_row(const json& row, const std::string& where) {
    ParsedRow parsed = parse_row(row, t_);
    if (!parsed.ok()) {
      skip(parsed.error, where);
      return;
    }
    if (o_.keep_pairs && parsed.format != RowFormat::paired && parsed.format != RowFormat::hh) {
      skip({"not_paired", "--keep-pairs needs paired rows (chosen and rejected)"}, where);
      return;
    }
    const int64_t row_index = ++s_.rows;
    ++s_.rows_by_format[format_name(parsed.format)];
    for (TextExample& e : parsed.examples) {
      const double keep = e.desirable ? o_.keep_desirable : o_.keep_undesirable;
      if (keep < 1.0 &&
          unit_hash(o_.seed, 1, static_cast<uint64_t>(examples_.size() + s_.subsampled_away)) >= keep) {
        ++s_.subsampled_away;
        continue;
      }
      examples_.push_back({std::move(e), row_index});
    }
  }

  void skip(const RowError& error, const std::string& where) {
    ++s_.rows;
    ++s_.rows_skipped;
    ++s_.skipped_by_reason[error.reason];
    if (static_cast<int64_t>(first_errors_.size()) < o_.report_errors) {
      first_errors_.push_back(str_cat(where, ": ", error.reason, ": ", error.detail));
    }
  }

  const PrepareOptions& o_;
  const ChatTemplate& t_;
  PrepareSummary& s_;
  std::vector<Located> examples_;
  std::vector<std::string> first_errors_;
};

}  // namespace

std::vector<Located> read_inputs(const PrepareOptions& o, PrepareSummary& s, std::string* reasons) {
  const ChatTemplate tmpl = o.template_file.empty() ? ChatTemplate::builtin(o.chat_template)
                                                    : ChatTemplate::from_file(o.template_file);
  RowCollector collector(o, tmpl, s);
  for (const std::string& input : o.inputs) {
    collector.read_file(input);
    log::info("prepare", "read ", input);
  }
  const double error_rate = s.rows ? static_cast<double>(s.rows_skipped) / static_cast<double>(s.rows) : 0.0;
  for (const auto& [reason, n] : s.skipped_by_reason)
    *reasons += str_cat(reasons->empty() ? "" : ", ", n, " ", reason);
  for (const std::string& e : collector.first_errors()) log::warn("prepare", "skipped ", e);
  if (error_rate > o.max_error_rate) {
    throw Error(
        str_cat(s.rows_skipped, " of ", s.rows, " rows (", percent(error_rate),
                ") could not be used, above --max-error-rate ", percent(o.max_error_rate), " (", *reasons,
                "); first: ", collector.first_errors().empty() ? "" : collector.first_errors().front(),
                ". Nothing was written."));
  }
  if (collector.examples().empty()) {
    std::string files;
    for (const std::string& input : o.inputs) files += (files.empty() ? "" : ", ") + input;
    throw Error(str_cat("no usable examples in ", files, " (", s.rows, " rows read, ", s.rows_skipped,
                        " skipped); an input is JSON lines or a JSON array of rows"));
  }
  return std::move(collector.examples());
}

}  // namespace kto::data_tools
