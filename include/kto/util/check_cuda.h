// KTO_CUDA_CHECK(call): throws kto::Error with file:line, the call, CUDA's error name and
// string, rank and host when a CUDA runtime call fails. Only built where the CUDA toolkit is.
#pragma once

#include <cuda_runtime_api.h>

#include "kto/util/check.h"

namespace kto::detail {

inline void cuda_check(cudaError_t code, const char* file, int line, const char* expr) {
  if (code == cudaSuccess) return;
  throw_check_failure(file, line, "CUDA call failed", expr,
                      str_cat(cudaGetErrorName(code), ": ", cudaGetErrorString(code)));
}

}  // namespace kto::detail

#define KTO_CUDA_CHECK(call) ::kto::detail::cuda_check((call), __FILE__, __LINE__, #call)
