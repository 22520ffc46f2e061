#include "line_reader.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "kto/util/check.h"

namespace kto::data_tools {

LineReader::LineReader(const std::string& path) : path_(path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw Error(path + ": cannot open: " + std::strerror(errno));
  gzbuffer(f, 1 << 20);
  file_ = f;
}

LineReader::~LineReader() {
  if (file_ != nullptr) gzclose(static_cast<gzFile>(file_));
}

bool LineReader::next(std::string& line) {
  auto* f = static_cast<gzFile>(file_);
  line.clear();
  char buffer[1 << 16];
  for (;;) {
    if (gzgets(f, buffer, sizeof(buffer)) == nullptr) {
      int code = 0;
      const char* message = gzerror(f, &code);
      if (code != Z_OK && code != Z_BUF_ERROR) {
        throw Error(detail::str_cat(path_, ":", line_number_ + 1, ": read error: ", message));
      }
      if (line.empty()) return false;
      break;  // last line without a newline
    }
    const size_t n = std::strlen(buffer);
    line.append(buffer, n);
    if (n > 0 && buffer[n - 1] == '\n') break;
    if (n == 0) break;
  }
  ++line_number_;
  if (!line.empty() && line.back() == '\n') line.pop_back();
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return true;
}

std::string read_whole_file(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::string out;
  char buffer[1 << 16];
  int n = 0;
  while ((n = gzread(f, buffer, sizeof(buffer))) > 0) out.append(buffer, static_cast<size_t>(n));
  int code = 0;
  const char* message = gzerror(f, &code);
  const std::string error = n < 0 ? message : "";
  gzclose(f);
  if (!error.empty()) throw Error(path + ": read error: " + error);
  return out;
}

}  // namespace kto::data_tools
