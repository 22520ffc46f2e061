#include "kto/util/files.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kto/util/check.h"

namespace kto {

using detail::str_cat;

void read_exact(int fd, uint64_t offset, uint64_t size, void* out, const std::string& what) {
  auto* dst = static_cast<char*>(out);
  uint64_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, dst + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(str_cat(what, ": read error at byte ", offset + done, ": ", std::strerror(errno)));
    }
    if (n == 0) {
      throw Error(str_cat(what, ": file ends at byte ", offset + done, ", expected ", size - done,
                          " more bytes (truncated?)"));
    }
    done += static_cast<uint64_t>(n);
  }
}

std::string read_text_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(str_cat(path, ": cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error(str_cat(path, ": cannot stat: ", std::strerror(errno)));
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  try {
    read_exact(fd, 0, text.size(), text.data(), path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return text;
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string absolute_path(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) return path;
  std::string out = resolved;
  std::free(resolved);
  return out;
}

int64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error(path + ": " + std::strerror(errno));
  return static_cast<int64_t>(st.st_size);
}

void copy_file(const std::string& from, const std::string& to) {
  const int fd = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(from + ": cannot open: " + std::strerror(errno));
  AtomicFile out(to);
  try {
    std::vector<char> buffer(1 << 20);
    for (;;) {
      const ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error(from + ": read failed: " + std::strerror(errno));
      if (n == 0) break;
      out.write(buffer.data(), static_cast<size_t>(n));
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  out.commit();
}

void make_directories(const std::string& path) {
  if (path.empty() || is_directory(path)) return;
  const size_t slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) make_directories(path.substr(0, slash));
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    throw Error(str_cat(path, ": cannot create directory: ", std::strerror(errno)));
  }
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

void remove_tree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  const int rc = ::nftw(
      path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
      FTW_DEPTH | FTW_PHYS);
  if (rc != 0) throw Error(str_cat(path, ": cannot remove: ", std::strerror(errno)));
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  tmp_path_ = str_cat(path_, ".tmp.", ::getpid());
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(str_cat(path_, ": cannot create: ", std::strerror(errno)));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_path_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t size) {
  KTO_CHECK(fd_ >= 0, path_, ": write after commit");
  const auto* src = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd_, src + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(str_cat(path_, ": write failed: ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  KTO_CHECK(fd_ >= 0, path_, ": committed twice");
  if (::fsync(fd_) != 0) throw Error(str_cat(path_, ": fsync failed: ", std::strerror(errno)));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    ::unlink(tmp_path_.c_str());
    throw Error(str_cat(path_, ": close failed: ", std::strerror(errno)));
  }
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_path_.c_str());
    throw Error(str_cat(path_, ": rename failed: ", std::strerror(err)));
  }
}

void write_text_file(const std::string& path, const std::string& text) {
  AtomicFile file(path);
  file.write(text);
  file.commit();
}

}  // namespace kto
