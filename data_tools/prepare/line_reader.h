// Reads text files line by line, plain or gzip-compressed (detected from the content, so
// `data.jsonl.gz` and `data.jsonl` both work whatever their names), holding at most one line —
// and at most `max_line_bytes` of it — in memory: a gzip bomb of one 1 GiB line costs a bounded
// buffer, not 7 GB. A gzip stream that ends early (cut short, or missing its trailer) is an
// error that says the file is truncated.
#pragma once

#include <cstdint>
#include <string>

namespace kto::data_tools {

class LineReader {
 public:
  static constexpr int64_t kDefaultMaxLineBytes = int64_t{32} << 20;

  // Throws kto::Error naming the file when it cannot be opened.
  explicit LineReader(const std::string& path, int64_t max_line_bytes = kDefaultMaxLineBytes);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line without its "\n" (or "\r\n"); false at the end. A line longer than
  // max_line_bytes is read past and returned empty with *too_long set (the caller skips it).
  // Throws kto::Error naming the file and line on a corrupt or truncated .gz.
  bool next(std::string& line, bool* too_long = nullptr);
  // 1-based number of the line last returned.
  int64_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

 private:
  bool fill();  // more bytes into buffer_; false at the end of the file
  std::string path_;
  void* file_ = nullptr;  // gzFile
  int64_t max_line_bytes_;
  int64_t line_number_ = 0;
  std::string buffer_;
  size_t pos_ = 0;
};

// The whole (possibly gzip-compressed) file; throws kto::Error naming it when it is larger than
// `max_bytes` or truncated.
std::string read_whole_file(const std::string& path, int64_t max_bytes);

}  // namespace kto::data_tools
