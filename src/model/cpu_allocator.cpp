#include "kto/model/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kto/util/memory.h"

namespace kto::model {

namespace {

constexpr size_t kMinCached = size_t{64} << 10;  // smaller blocks: glibc's bins serve them well

// Cacheable sizes are rounded up to 4 classes per power of two (at most 25% more address
// space; the untouched tail costs no memory), so similar sizes share their free blocks.
size_t size_class(size_t n) {
  size_t top = 1;
  while (top <= n / 2) top *= 2;
  const size_t step = std::max<size_t>(top / 4, 4096);
  return (n + step - 1) / step * step;
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(size_t cap) : cap_(cap) {}

  c10::DataPtr allocate(size_t n) const override {
    void* p = nullptr;
    if (n >= kMinCached) {
      n = size_class(n);
      p = take(n);  // may be a larger block: n becomes its size
      if (p == nullptr) p = c10::alloc_cpu(n);
      remember(p, n);  // the deleter gets only the pointer: sizes in a side table
    } else {
      p = c10::alloc_cpu(n);
    }
    return {p, p, &deleter, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &deleter; }

  CpuCacheStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return {hits_, misses_, static_cast<int64_t>(cached_)};
  }

  static CachingCpuAllocator* instance;

 private:
  static void deleter(void* p) { instance->release(p); }

  // The smallest free block of at least n bytes and at most 2n (its memory is already resident:
  // reusing it for a smaller tensor costs nothing, a fresh block would add to the footprint).
  void* take(size_t& n) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = free_.lower_bound(n); it != free_.end() && it->first <= 2 * n; ++it) {
      if (it->second.empty()) continue;
      void* p = it->second.back();
      it->second.pop_back();
      n = it->first;
      cached_ -= n;
      ++hits_;
      return p;
    }
    ++misses_;
    return nullptr;
  }
  void remember(void* p, size_t n) const {
    std::lock_guard<std::mutex> lock(mutex_);
    sizes_[p] = n;
  }
  void release(void* p) const {
    if (p == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto it = sizes_.find(p);
      if (it != sizes_.end()) {
        const size_t n = it->second;
        sizes_.erase(it);
        if (cached_ + n <= cap_) {
          free_[n].push_back(p);
          cached_ += n;
          return;
        }
      }
    }
    c10::free_cpu(p);
  }

  const size_t cap_;
  mutable std::mutex mutex_;
  mutable std::map<size_t, std::vector<void*>> free_;  // size -> free blocks
  mutable std::unordered_map<void*, size_t> sizes_;    // live cacheable blocks
  mutable size_t cached_ = 0;
  mutable int64_t hits_ = 0, misses_ = 0;
};

CachingCpuAllocator* CachingCpuAllocator::instance = nullptr;

}  // namespace

bool install_caching_cpu_allocator() {
  static const bool installed = [] {
    if (const char* choice = std::getenv("KTO_CPU_ALLOCATOR"); choice && std::string(choice) == "system")
      return false;
    double cap = std::min(static_cast<double>(physical_memory_bytes()) / 4, 16.0 * (1 << 30));
    if (const char* mib = std::getenv("KTO_CPU_CACHE_MIB")) cap = std::strtod(mib, nullptr) * (1 << 20);
    // Never destroyed: tensors freed during exit still find it.
    CachingCpuAllocator::instance = new CachingCpuAllocator(static_cast<size_t>(std::max(0.0, cap)));
    c10::SetCPUAllocator(CachingCpuAllocator::instance, /*priority=*/1);
    return true;
  }();
  return installed;
}

CpuCacheStats cpu_cache_stats() {
  return CachingCpuAllocator::instance ? CachingCpuAllocator::instance->stats() : CpuCacheStats{};
}

}  // namespace kto::model
