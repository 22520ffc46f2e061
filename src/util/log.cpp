#include "kto/util/log.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>

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

std::string g_status;   // the live progress line on a terminal ("" when none)
FILE* g_out = nullptr;  // nullptr: stdout / stderr
FILE* g_err = nullptr;

// Whether progress is one updating line (a person watching a terminal) or plain lines (a log
// file, a batch job). KTO_PROGRESS=line|plain decides; otherwise: stdout is a terminal, and when
// mpirun started us — mpirun gives its ranks a pseudo-terminal whatever its own output is — so is
// mpirun's (our parent's) stdout.
bool live_progress() {
  static const bool live = [] {
    const char* forced = std::getenv("KTO_PROGRESS");
    if (forced != nullptr && std::string(forced) == "line") return true;
    if (forced != nullptr && std::string(forced) == "plain") return false;
    if (!::isatty(STDOUT_FILENO)) return false;
    if (std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr) return true;
    char target[256] = {0};
    const std::string link = "/proc/" + std::to_string(::getppid()) + "/fd/1";
    const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
    const std::string out = n > 0 ? std::string(target, static_cast<size_t>(n)) : "";
    return out.rfind("/dev/pts/", 0) == 0 || out.rfind("/dev/tty", 0) == 0;
  }();
  return live;
}

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
  if (const std::optional<Level> level = parse_choice(kLevels, text)) return *level;
  if (text == "warning") return Level::warn;
  throw Error("unknown log level '" + text + "' (use debug|info|warn|error)");
}

size_t terminal_columns() {
  if (const char* c = std::getenv("COLUMNS")) {
    const long n = std::strtol(c, nullptr, 10);
    if (n > 0) return static_cast<size_t>(n);
  }
  winsize w{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col > 0) return w.ws_col;
  return 0;
}

void status(const char* tag, const std::string& text) {
  if (process_identity().rank != 0 || !enabled(Level::info)) return;
  if (g_out != nullptr || !live_progress()) {
    write(Level::info, tag, false, text);
    return;
  }
  std::lock_guard<std::mutex> lock(output_mutex());
  g_status = detail::str_cat("[", tag, "] ", text);
  // A line longer than the terminal wraps, and "\r" then rewrites only its last row: cut it to
  // the width (COLUMNS, else the terminal's), keeping its start: step, loss, rewards.
  if (const size_t width = terminal_columns(); width > 1 && g_status.size() >= width) {
    g_status.resize(width - 2);
    g_status += "…";
  }
  std::fputs("\r\033[2K", stdout);
  std::fputs(g_status.c_str(), stdout);
  std::fflush(stdout);
}

void end_status() {
  std::lock_guard<std::mutex> lock(output_mutex());
  if (g_status.empty()) return;
  std::fputs("\n", stdout);
  std::fflush(stdout);
  g_status.clear();
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
  if (!g_status.empty()) std::fputs("\r\033[2K", stdout);  // lift the progress line out of the way
  std::fwrite(line.data(), 1, line.size(), stream);
  std::fflush(stream);
  if (!g_status.empty()) {
    std::fputs(g_status.c_str(), stdout);
    std::fflush(stdout);
  }
}

}  // namespace kto::log
