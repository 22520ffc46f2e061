// KTO_H5_CHECK(call): HDF5 calls return a negative hid_t/herr_t on failure. The check returns the
// value on success and otherwise throws kto::Error with file:line, the call, the innermost
// messages of HDF5's error stack, rank and host. HDF5's own printing to stderr is switched off
// the first time a check runs, so the message appears once, in our format.
#pragma once

#include <hdf5.h>

#include <string>

#include "kto/util/check.h"

namespace kto::detail {

// The HDF5 error stack of this thread as "major: minor (description); ...", then cleared.
std::string h5_error_stack();
// Turns off HDF5's automatic error printing (idempotent, cheap).
void h5_silence_errors();

template <class T>
T h5_check(T value, const char* file, int line, const char* expr) {
  if (value >= 0) return value;
  throw_check_failure(file, line, "HDF5 call failed", expr, h5_error_stack());
}

}  // namespace kto::detail

#define KTO_H5_CHECK(call) \
  (::kto::detail::h5_silence_errors(), ::kto::detail::h5_check((call), __FILE__, __LINE__, #call))
