// Error types and the invariant check used everywhere in library code.
//
// Library code throws; binaries catch in main (comm::run_distributed_main), print the cause with
// rank and host, and abort the whole job. Two kinds of failure:
//   * kto::Error            — bad input or environment (a file, key or tensor is named);
//   * KTO_CHECK(cond, ...)  — an invariant: the message carries file:line, the expression,
//                             rank and host, like nccl-tests' NCCLCHECK or llm.c's checks.
// Library-specific checks (MPI, HDF5, CUDA, NCCL) live in check_<lib>.h so that including this
// header never pulls a library's headers in.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace kto {

// Every exception kto throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A configuration problem: an unknown, ill-typed, missing or inconsistent key.
class ConfigError : public Error {
 public:
  using Error::Error;
  ConfigError(const std::string& message, std::string key, std::string what)
      : Error(message), key_(std::move(key)), what_(std::move(what)) {}
  // The key and the complaint of a key_error ("" otherwise): lets the config loader say which
  // --set gave the value.
  const std::string& key() const { return key_; }
  const std::string& complaint() const { return what_; }

 private:
  std::string key_, what_;
};

// "SOURCE: key 'KEY': WHAT" (without a source: "key 'KEY': WHAT"), the form of every config error.
inline ConfigError key_error(const std::string& source, const std::string& key, const std::string& what) {
  return ConfigError((source.empty() ? "" : source + ": ") + "key '" + key + "': " + what, key, what);
}

namespace detail {

template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

// Builds "file:line: what: `expr`: message [rank R of W on HOST]" and throws kto::Error.
[[noreturn]] void throw_check_failure(const char* file, int line, const char* what, const char* expr,
                                      const std::string& message);

}  // namespace detail

// "rank R of W on HOST" for the calling process (see kto/util/process.h).
std::string process_tag();

}  // namespace kto

// KTO_CHECK(cond, message parts...): the parts are streamed into the message.
#define KTO_CHECK(cond, ...)                                                        \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      ::kto::detail::throw_check_failure(__FILE__, __LINE__, "check failed", #cond, \
                                         ::kto::detail::str_cat(__VA_ARGS__));      \
    }                                                                               \
  } while (0)
