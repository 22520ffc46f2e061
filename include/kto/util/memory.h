// What the machine has, and a check that a job fits in it before it allocates: refused with the
// estimate, what it counts and how to override, instead of an allocator failure minutes in (or
// the OOM killer taking a node down).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kto {

// Physical memory available to this process in bytes: MemTotal, lowered by a cgroup memory
// limit (v2 memory.max or v1 memory.limit_in_bytes) when one is set; 0 when unknown.
int64_t physical_memory_bytes();

// `value` in the largest of `units` that keeps it under `base`, three significant digits:
// (6531390, 1000, {"", "K", "M"}) -> "6.53M".
std::string scaled_text(double value, double base, const std::vector<const char*>& units);

// "84.8 MiB", "1.50 GiB": three significant digits, binary units.
std::string human_bytes(double bytes);

// Throws kto::Error when `bytes` exceeds the physical memory (unless it is unknown): "WHAT needs
// ~X (COUNTED) but this machine has Y of memory; OVERRIDE". `what` names the input (a file, a
// config key), `override_hint` says how a user who knows better runs anyway.
void check_fits_in_memory(double bytes, const std::string& what, const std::string& counted,
                          const std::string& override_hint);

}  // namespace kto
