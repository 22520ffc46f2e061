// What every libFuzzer harness shares: the input as a file (most parsers read paths, as users
// give them) and the rule that bad bytes may only end in a kto::Error — a clear refusal naming
// the file. Any other exception escapes the harness, std::terminate aborts, and libFuzzer saves
// the input as a crash: an unclear error (a library's raw message) counts as a finding.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "kto/util/check.h"
#include "kto/util/log.h"

namespace kto::fuzz {

// A private directory for this process, made once (under $TMPDIR, else /tmp).
inline const std::string& work_dir() {
  static const std::string dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/kto-fuzz-XXXXXX";
    if (!::mkdtemp(pattern.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    // Harnesses log nothing: a refusal's warning on every input would slow the search.
    log::set_level(log::Level::error);
    return pattern;
  }();
  return dir;
}

// Writes the input to WORK_DIR/NAME (replacing the last one) and returns the path.
inline std::string write_input(const uint8_t* data, size_t size, const std::string& name) {
  const std::string path = work_dir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

// Runs `parse`; a kto::Error is the expected outcome for bad bytes.
template <class F>
void expect_clear_errors(F&& parse) {
  try {
    parse();
  } catch (const kto::Error&) {
  }
}

}  // namespace kto::fuzz
