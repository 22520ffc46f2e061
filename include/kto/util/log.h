// Rank-aware logging with subsystem tags.
//
//   log::info("data", "read ", n, " examples");       // rank 0 only:  "[  1.2s][data] read 3 examples"
//   log::info_all("comm", "device ", d);              // every rank:   "[  1.2s][comm r1@node7] device 1"
//   log::warn(...) / log::warn_all(...) / log::error(...)   (error: every rank, to stderr)
//
// The level comes from KTO_LOG_LEVEL (debug|info|warn|error, default info). Lines are written
// whole under a lock so ranks and threads never interleave within a line.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>

#include "kto/util/check.h"
#include "kto/util/choice.h"

namespace kto::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };
inline constexpr ChoiceTable<Level, 4> kLevels{
    {{Level::debug, "debug"}, {Level::info, "info"}, {Level::warn, "warn"}, {Level::error, "error"}}};

Level level();
void set_level(Level level);
// Parses "debug|info|warn|error" (and "warning"); throws kto::Error naming the value otherwise.
Level parse_level(const std::string& text);
bool enabled(Level level);

// Where lines go (default stdout for debug/info, stderr for warnings and errors).
void set_streams(FILE* out, FILE* err);

// Rank 0's progress line: on a terminal it is rewritten in place (other lines print above it);
// otherwise it is an ordinary info line. end_status() finishes it with a newline.
// A live status line is cut to terminal_columns() so that it never wraps (a wrapped line cannot
// be rewritten in place).
void status(const char* tag, const std::string& text);
// Columns of the terminal: $COLUMNS, else stdout's window size; 0 when unknown.
size_t terminal_columns();
void end_status();

// Writes one line. `all_ranks` false means only rank 0 writes.
void write(Level level, const char* tag, bool all_ranks, const std::string& message);

template <class... Args>
void debug(const char* tag, const Args&... args) {
  if (enabled(Level::debug)) write(Level::debug, tag, false, detail::str_cat(args...));
}
template <class... Args>
void info(const char* tag, const Args&... args) {
  if (enabled(Level::info)) write(Level::info, tag, false, detail::str_cat(args...));
}
template <class... Args>
void info_all(const char* tag, const Args&... args) {
  if (enabled(Level::info)) write(Level::info, tag, true, detail::str_cat(args...));
}
template <class... Args>
void warn(const char* tag, const Args&... args) {
  if (enabled(Level::warn)) write(Level::warn, tag, false, detail::str_cat(args...));
}
template <class... Args>
void warn_all(const char* tag, const Args&... args) {
  if (enabled(Level::warn)) write(Level::warn, tag, true, detail::str_cat(args...));
}
template <class... Args>
void error(const char* tag, const Args&... args) {
  write(Level::error, tag, true, detail::str_cat(args...));
}

}  // namespace kto::log
