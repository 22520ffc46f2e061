// Small POSIX file helpers with error messages that name the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kto {

// Reads exactly `size` bytes at `offset` (pread, retrying on EINTR and short reads). Throws
// kto::Error naming `what` on an I/O error or when the file ends early.
void read_exact(int fd, uint64_t offset, uint64_t size, void* out, const std::string& what);

// The whole file as a string; throws kto::Error naming the path.
std::string read_text_file(const std::string& path);

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
// The canonical absolute path (realpath), or `path` itself when it cannot be resolved.
std::string absolute_path(const std::string& path);
// Size in bytes; throws kto::Error naming the path.
int64_t file_size(const std::string& path);
// Copies `from` to `to` atomically (AtomicFile); throws kto::Error naming the file.
void copy_file(const std::string& from, const std::string& to);
// mkdir -p; throws kto::Error naming the path.
void make_directories(const std::string& path);
std::string join_path(const std::string& dir, const std::string& name);
// rm -rf; missing paths are fine. Throws kto::Error naming the path on failure.
void remove_tree(const std::string& path);

// A file that appears at `path` only when commit() succeeds: data goes to a temporary file in
// the same directory, is flushed to disk (fsync), and renamed over `path`. If the writer is
// destroyed without commit (an exception, a full disk), the temporary file is removed and
// whatever was at `path` before is untouched.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void write(const std::string& text) { write(text.data(), text.size()); }
  void commit();

 private:
  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
};

// Writes `text` to `path` atomically (AtomicFile).
void write_text_file(const std::string& path, const std::string& text);

}  // namespace kto
