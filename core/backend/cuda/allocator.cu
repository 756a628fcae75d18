// The caching device allocator (allocator.h).
#include <algorithm>

#include "core/backend/cuda/allocator.h"
#include "core/backend/cuda/cuda_check.h"

namespace cr::cuda {

namespace {
constexpr size_t kSmall = 512, kLarge = size_t(2) << 20, kSmallLimit = size_t(1) << 20;
double mib(size_t b) { return (double)b / (1 << 20); }
}  // namespace

size_t CachingAllocator::round_size(size_t bytes) {
  const size_t g = bytes <= kSmallLimit ? kSmall : kLarge;
  return (bytes + g - 1) / g * g;
}

CachingAllocator::CachingAllocator(int device, cudaStream_t stream)
    : device_(device), stream_(stream) {}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cache_locked();
  // Blocks still handed out belong to DeviceBuffers that outlive the backend; the process is
  // ending (the backend is process-wide), so they are left to the driver.
}

void* CachingAllocator::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  // Best fit among cached blocks no more than 1/8 larger than asked.
  auto it = cache_.lower_bound(size);
  if (it != cache_.end() && it->first <= size + size / 8) {
    void* p = it->second;
    const size_t got = it->first;
    cache_.erase(it);
    stats_.cached -= got;
    blocks_.emplace(p, got);
    stats_.in_use += got;
    stats_.peak = std::max(stats_.peak, stats_.in_use);
    return p;
  }
  CR_CUDA_CHECK(cudaSetDevice(device_));
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, size);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear it before the retry
    release_cache_locked();
    e = cudaMalloc(&p, size);
  }
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
    CR_THROW(
        "CUDA out of memory on GPU {}: asked {:.1f} MiB ({} bytes); this process has {:.1f} MiB "
        "in use and {:.1f} MiB cached; the device has {:.1f} MiB free of {:.1f} MiB [{}]",
        device_, mib(size), bytes, mib(stats_.in_use), mib(stats_.cached), mib(free_b),
        mib(total_b), library_versions());
  }
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw_library_error("CUDA", (long)e, cudaGetErrorString(e), "cudaMalloc(&p, size)", __FILE__,
                        __LINE__);
  }
  stats_.device_mallocs++;
  blocks_.emplace(p, size);
  stats_.in_use += size;
  stats_.peak = std::max(stats_.peak, stats_.in_use);
  return p;
}

void CachingAllocator::deallocate(void* p, size_t) noexcept {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.find(p);
  if (it == blocks_.end()) return;  // not ours: nothing safe to do in a noexcept path
  const size_t size = it->second;
  blocks_.erase(it);
  stats_.in_use -= size;
  cache_.emplace(size, p);
  stats_.cached += size;
}

void CachingAllocator::zero(void* p, size_t bytes) {
  if (p && bytes) CR_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::release_cache() noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  release_cache_locked();
}

void CachingAllocator::release_cache_locked() noexcept {
  // cudaFree synchronizes the device, so blocks the stream may still be using are safe to free.
  // Errors are ignored: this runs on error and teardown paths (the runtime may be unloading).
  for (auto& [size, p] : cache_)
    if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
  cache_.clear();
  stats_.cached = 0;
}

}  // namespace cr::cuda
