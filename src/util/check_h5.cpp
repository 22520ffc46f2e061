#include "kto/util/check_h5.h"

#include <atomic>

namespace kto::detail {
namespace {

// The innermost entries say what went wrong (e.g. "File too large"); the rest of a long stack
// repeats it through HDF5's layers.
constexpr unsigned kStackEntries = 2;

herr_t collect_error(unsigned depth, const H5E_error2_t* entry, void* out) {
  if (depth >= kStackEntries) return 0;
  auto* text = static_cast<std::string*>(out);
  if (!text->empty()) *text += "; ";
  char major[128] = {0};
  char minor[128] = {0};
  H5Eget_msg(entry->maj_num, nullptr, major, sizeof(major));
  H5Eget_msg(entry->min_num, nullptr, minor, sizeof(minor));
  *text += str_cat(entry->func_name, ": ", entry->desc ? entry->desc : "", " (", major, ": ", minor, ")");
  return 0;
}

}  // namespace

void h5_silence_errors() {
  static std::atomic<bool> done{false};
  if (done.load(std::memory_order_relaxed)) return;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  done.store(true, std::memory_order_relaxed);
}

std::string h5_error_stack() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_error, &text);
  H5Eclear2(H5E_DEFAULT);
  return text.empty() ? std::string("no HDF5 error stack") : text;
}

}  // namespace kto::detail
