// KTO_NCCL_CHECK(call): throws kto::Error with file:line, the call, NCCL's error string (and
// its last error message, which names the failing peer or transport), rank and host.
#pragma once

#include <nccl.h>

#include "kto/util/check.h"

namespace kto::detail {

inline void nccl_check(ncclResult_t code, const char* file, int line, const char* expr) {
  if (code == ncclSuccess) return;
  std::string message = str_cat("error ", static_cast<int>(code), ": ", ncclGetErrorString(code));
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && *last != '\0') message += str_cat(" (", last, ")");
  throw_check_failure(file, line, "NCCL call failed", expr, message);
}

}  // namespace kto::detail

#define KTO_NCCL_CHECK(call) ::kto::detail::nccl_check((call), __FILE__, __LINE__, #call)
