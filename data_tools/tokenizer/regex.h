// A compiled Unicode regular expression (PCRE2 with UTF and UCP: \p{L}, \p{N}, \s are Unicode
// classes), JIT-compiled when available. Used by the tokenizers' split patterns.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kto::tok {

class Regex {
 public:
  // Throws kto::Error naming the pattern and PCRE2's message on a bad pattern.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches, left to right, as [begin, end) byte ranges.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Impl;
  std::string pattern_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kto::tok
