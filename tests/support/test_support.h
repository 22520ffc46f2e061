// Helpers shared by kto's tests: fixture locations, scratch directories, subprocesses.
#pragma once

#include <cstdlib>
#include <string>

namespace kto::test {

// tests/fixtures in the source tree.
std::string fixtures_dir();
// The directory holding kto's binaries (kto-ckpt, ...): $KTO_BIN_DIR, else the build's.
std::string bin_dir();
// $name if set and non-empty, else `fallback`.
std::string env_or(const char* name, const std::string& fallback);

// A fresh directory under $TMPDIR (or /tmp), removed with its contents when destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs a shell command; returns its exit status and fills `output` with stdout+stderr.
int run_command(const std::string& command, std::string* output = nullptr);

// Ends this test process with status 77, which ctest reports as Skipped, saying why on stderr.
[[noreturn]] void skip_test(const std::string& why);

// Whether `program` is an executable on PATH.
bool have_program(const std::string& program);

void write_bytes(const std::string& path, const std::string& bytes);
std::string read_bytes(const std::string& path);

}  // namespace kto::test
