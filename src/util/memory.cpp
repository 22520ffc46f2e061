#include "kto/util/memory.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "kto/util/check.h"

namespace kto {

namespace {

// The first number in `path` (a cgroup limit file), or -1 ("max", absent or unreadable).
int64_t read_limit(const char* path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text == "max") return -1;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  return end != text.c_str() && v > 0 ? static_cast<int64_t>(v) : -1;
}

}  // namespace

int64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  int64_t total = pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
  for (const char* limit : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    const int64_t v = read_limit(limit);
    if (v > 0 && (total == 0 || v < total)) total = v;
  }
  return total;
}

std::string scaled_text(double value, double base, const std::vector<const char*>& units) {
  size_t u = 0;
  while (value >= base && u + 1 < units.size()) {
    value /= base;
    ++u;
  }
  char text[48];
  std::snprintf(text, sizeof(text),
                value < 10    ? "%.2f%s"
                : value < 100 ? "%.1f%s"
                              : "%.0f%s",
                value, units[u]);
  return text;
}

std::string human_bytes(double bytes) {
  return scaled_text(bytes, 1024, {" B", " KiB", " MiB", " GiB", " TiB", " PiB", " EiB"});
}

void check_fits_in_memory(double bytes, const std::string& what, const std::string& counted,
                          const std::string& override_hint) {
  const int64_t have = physical_memory_bytes();
  if (have <= 0 || bytes <= static_cast<double>(have)) return;
  throw Error(detail::str_cat(what, " needs ~", human_bytes(bytes), " (", counted, ") but this machine has ",
                              human_bytes(static_cast<double>(have)), " of memory; ", override_hint));
}

}  // namespace kto
