#include "line_reader.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "kto/util/check.h"

namespace kto::data_tools {

using detail::str_cat;

namespace {

// After gzread returned `n`: throws naming the file when the stream is corrupt or ends early.
// zlib reports a gzip member that stops before its end (no trailer, no CRC) as Z_BUF_ERROR.
void check_stream(gzFile f, int n, const std::string& where) {
  int code = Z_OK;
  const char* message = gzerror(f, &code);
  if (code == Z_BUF_ERROR) {
    throw Error(where +
                ": truncated compressed file: the gzip stream ends before its end (an incomplete "
                "download or copy?)");
  }
  if (n < 0 || (code != Z_OK && code != Z_STREAM_END)) throw Error(where + ": read error: " + message);
}

}  // namespace

LineReader::LineReader(const std::string& path, int64_t max_line_bytes)
    : path_(path), max_line_bytes_(max_line_bytes) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw Error(path + ": cannot open: " + std::strerror(errno));
  gzbuffer(f, 1 << 20);
  file_ = f;
}

LineReader::~LineReader() {
  if (file_ != nullptr) gzclose(static_cast<gzFile>(file_));
}

bool LineReader::fill() {
  auto* f = static_cast<gzFile>(file_);
  if (pos_ > 0) {
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  constexpr unsigned kChunk = 1 << 16;  // decompressed straight into the buffer, no copy
  const size_t kept = buffer_.size();
  buffer_.resize(kept + kChunk);
  const int n = gzread(f, buffer_.data() + kept, kChunk);
  buffer_.resize(kept + static_cast<size_t>(std::max(n, 0)));
  check_stream(f, n, str_cat(path_, " (after line ", line_number_, ")"));
  return n > 0;
}

bool LineReader::next(std::string& line, bool* too_long) {
  line.clear();
  bool over = false, any = false;
  for (;;) {
    const size_t nl = buffer_.find('\n', pos_);
    const size_t end = nl == std::string::npos ? buffer_.size() : nl;
    if (end > pos_) any = true;
    if (!over) {
      line.append(buffer_, pos_, end - pos_);
      if (static_cast<int64_t>(line.size()) > max_line_bytes_) {
        over = true;  // read past the rest of it, keep nothing
        line.clear();
        line.shrink_to_fit();
      }
    }
    if (nl != std::string::npos) {
      pos_ = nl + 1;
      any = true;
      break;
    }
    pos_ = buffer_.size();
    if (!fill()) break;
  }
  if (!any) return false;
  ++line_number_;
  if (too_long != nullptr) *too_long = over;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return true;
}

std::string read_whole_file(const std::string& path, int64_t max_bytes) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::string out;
  char buffer[1 << 16];
  int n = 0;
  try {
    while ((n = gzread(f, buffer, sizeof(buffer))) > 0) {
      out.append(buffer, static_cast<size_t>(n));
      if (static_cast<int64_t>(out.size()) > max_bytes) {
        throw Error(
            str_cat(path, ": more than ", max_bytes >> 20,
                    " MiB of text in one JSON document; give large inputs as JSON lines (one row per line)"));
      }
    }
    check_stream(f, n, path);
  } catch (...) {
    gzclose(f);
    throw;
  }
  gzclose(f);
  return out;
}

}  // namespace kto::data_tools
