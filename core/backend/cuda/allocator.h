// The CUDA backend's device memory: a caching allocator behind the Allocator interface
// (core/tensor/tensor.h). cudaMalloc and cudaFree are slow and cudaFree synchronizes the whole
// device, while a training step frees and reallocates the same sizes every step, so freed blocks
// are kept and handed out again.
//
// Reuse is safe without events because every op runs on the backend's one stream: work that
// used a block before it was freed is ordered before any work issued after it is reused. Sizes
// are rounded (512 B below 1 MiB, 2 MiB above: cudaMalloc's own granularity) and a request takes
// the smallest cached block that fits without wasting more than an eighth of it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>

#include "core/tensor/tensor.h"

namespace cr::cuda {

class CachingAllocator final : public Allocator {
 public:
  // Allocations on GPU `device`; zero() is ordered on `stream`.
  CachingAllocator(int device, cudaStream_t stream);
  ~CachingAllocator() override;  // frees the cache; never throws
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  Device device() const override { return Device::CUDA; }
  // A block of at least `bytes` (256-byte aligned, as cudaMalloc's). When the device is full,
  // the cache is released and cudaMalloc retried once; then cr::Error names the bytes asked, in
  // use, cached and free on the device. 0 bytes gives nullptr.
  void* allocate(size_t bytes) override;
  // Returns the block to the cache (stream-ordered reuse, see above).
  void deallocate(void* p, size_t bytes) noexcept override;
  // cudaMemsetAsync on the stream: zero bytes [p, p + bytes).
  void zero(void* p, size_t bytes) override;

  // Byte counts for the memory plan and logs: blocks handed out (rounded sizes), the most ever
  // handed out at once, blocks kept in the cache, and the number of cudaMalloc calls made.
  struct Stats {
    size_t in_use = 0, peak = 0, cached = 0, device_mallocs = 0;
  };
  Stats stats() const;
  // cudaFree every cached block (synchronizes the device).
  void release_cache() noexcept;

  // The rounded size a request of `bytes` occupies.
  static size_t round_size(size_t bytes);

 private:
  void release_cache_locked() noexcept;

  int device_;
  cudaStream_t stream_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> cache_;        // free blocks by size
  std::unordered_map<void*, size_t> blocks_;  // blocks handed out -> their size
  Stats stats_;
};

}  // namespace cr::cuda
