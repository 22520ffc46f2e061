// Reads text files line by line, plain or gzip-compressed (detected from the content, so
// `data.jsonl.gz` and `data.jsonl` both work whatever their names).
#pragma once

#include <cstdint>
#include <string>

namespace kto::data_tools {

class LineReader {
 public:
  // Throws kto::Error naming the file when it cannot be opened.
  explicit LineReader(const std::string& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line without its "\n" (or "\r\n"); false at the end. Throws on a corrupt .gz.
  bool next(std::string& line);
  // 1-based number of the line last returned.
  int64_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* file_ = nullptr;  // gzFile
  int64_t line_number_ = 0;
};

// The whole (possibly gzip-compressed) file.
std::string read_whole_file(const std::string& path);

}  // namespace kto::data_tools
