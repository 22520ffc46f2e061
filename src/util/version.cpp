#include "kto/util/version.h"

#include <ctime>

#include "kto/util/check.h"

#ifndef KTO_VERSION_STRING
#error "KTO_VERSION_STRING must be defined by the build"
#endif

namespace kto {

const char* version() { return KTO_VERSION_STRING; }

std::string build_summary() {
  return detail::str_cat("kto ", KTO_VERSION_STRING, " (LibTorch ", KTO_TORCH_VERSION_STRING,
                         ", NCCL communicator: ", KTO_BUILT_WITH_NCCL ? "yes" : "no",
                         ", CUDA LibTorch: ", KTO_BUILT_WITH_TORCH_CUDA ? "yes" : "no", ")");
}

std::string utc_now() {
  char text[32];
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

}  // namespace kto
