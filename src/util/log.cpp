#include "kto/util/log.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "kto/util/process.h"

namespace kto::log {
namespace {

using Clock = std::chrono::steady_clock;
const Clock::time_point g_start = Clock::now();

Level level_from_environment() {
  const char* text = std::getenv("KTO_LOG_LEVEL");
  if (text == nullptr || *text == '\0') return Level::info;
  try {
    return parse_level(text);
  } catch (const Error&) {
    std::fprintf(stderr, "[kto] ignoring KTO_LOG_LEVEL=%s (use debug|info|warn|error)\n", text);
    return Level::info;
  }
}

Level& current_level() {
  static Level value = level_from_environment();
  return value;
}

FILE* g_out = nullptr;  // nullptr: stdout / stderr
FILE* g_err = nullptr;

std::mutex& output_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

Level level() { return current_level(); }
void set_level(Level value) { current_level() = value; }
bool enabled(Level value) { return static_cast<int>(value) >= static_cast<int>(current_level()); }

void set_streams(FILE* out, FILE* err) {
  std::lock_guard<std::mutex> lock(output_mutex());
  g_out = out;
  g_err = err;
}

Level parse_level(const std::string& text) {
  if (text == "debug") return Level::debug;
  if (text == "info") return Level::info;
  if (text == "warn" || text == "warning") return Level::warn;
  if (text == "error") return Level::error;
  throw Error("unknown log level '" + text + "' (use debug|info|warn|error)");
}

void write(Level value, const char* tag, bool all_ranks, const std::string& message) {
  const ProcessIdentity& id = process_identity();
  if (!all_ranks && id.rank != 0) return;
  const double seconds = std::chrono::duration<double>(Clock::now() - g_start).count();
  const char* severity = value == Level::warn ? "warning: " : value == Level::error ? "error: " : "";
  char stamp[32];
  std::snprintf(stamp, sizeof(stamp), "[%7.1fs]", seconds);
  std::string line = stamp;
  line += "[";
  line += tag;
  if (all_ranks && id.world_size > 1) line += detail::str_cat(" r", id.rank, "@", id.host);
  line += "] ";
  line += severity;
  line += message;
  line += "\n";
  std::lock_guard<std::mutex> lock(output_mutex());
  FILE* stream = value >= Level::warn ? (g_err ? g_err : stderr) : (g_out ? g_out : stdout);
  std::fwrite(line.data(), 1, line.size(), stream);
  std::fflush(stream);
}

}  // namespace kto::log
