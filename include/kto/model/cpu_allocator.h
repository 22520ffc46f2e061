// A caching allocator for CPU tensors. A training step allocates and frees the same large
// buffers every step (gathered units, activations, log-prob chunks, gradient staging); through
// glibc each one above its mmap threshold is a fresh mmap — page faults and page zeroing on
// first touch, munmap on free: ~10% of a CPU step's cycles on a block-dominated shape. This
// allocator keeps freed blocks of 64 KiB and more in per-size free lists and hands them out
// again for the same size (steps repeat their sizes exactly), up to a cap of cached bytes;
// smaller blocks and anything past the cap go to LibTorch's default CPU allocator. Contents are
// never relied on (a new tensor is uninitialised either way), so numerics do not change.
#pragma once

#include <cstdint>

namespace kto::model {

// Makes the caching allocator LibTorch's CPU allocator (once; later calls do nothing). With
// KTO_CPU_ALLOCATOR=system in the environment it leaves LibTorch's default in place.
// KTO_CPU_CACHE_MIB caps the cached free bytes (default: a quarter of physical memory, at most
// 16 GiB). Returns true when the caching allocator is in place.
bool install_caching_cpu_allocator();

struct CpuCacheStats {
  int64_t hits = 0, misses = 0;  // allocations of cacheable size served from / not from the cache
  int64_t cached_bytes = 0;      // free bytes held now
};
CpuCacheStats cpu_cache_stats();

}  // namespace kto::model
