// KTO_MPI_CHECK(call): throws kto::Error with file:line, the call, MPI's error string, rank and
// host when an MPI call does not return MPI_SUCCESS. Communicators are set to MPI_ERRORS_RETURN
// by kto/comm so that failures reach this check instead of aborting inside MPI.
#pragma once

#include <mpi.h>

#include "kto/util/check.h"

namespace kto::detail {

inline void mpi_check(int code, const char* file, int line, const char* expr) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  throw_check_failure(file, line, "MPI call failed", expr,
                      str_cat("error ", code, ": ", std::string(text, static_cast<size_t>(length))));
}

}  // namespace kto::detail

#define KTO_MPI_CHECK(call) ::kto::detail::mpi_check((call), __FILE__, __LINE__, #call)
