// Threading and ISA helpers shared by the CPU ops.
//
// One threading policy: OpenMP with static schedules. OpenBLAS is its OpenMP build, so BLAS calls
// and our loops share one pool and never oversubscribe; static partitions make every result
// bit-identical run to run for a given thread count (and reductions are arranged so they do not
// depend on it at all).
//
// Hot element-wise kernels are written as plain loops over a range and compiled several times
// (CR_CLONES): AVX-512, AVX2 and baseline x86-64, picked at load time for the machine at hand.
// They run under a parallel region that hands each thread one contiguous range.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <utility>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CR_CLONES
#endif

namespace cr::cpu {

// This thread's share [lo, hi) of n items, in blocks of `align` (static, contiguous).
inline std::pair<size_t, size_t> thread_range(size_t n, size_t align = 16) {
  const size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
  const size_t blocks = (n + align - 1) / align;
  const size_t per = (blocks + nt - 1) / nt;
  const size_t lo = std::min(n, t * per * align), hi = std::min(n, (t + 1) * per * align);
  return {lo, hi};
}

// Runs f(lo, hi) over n items split across the OpenMP threads.
template <typename F>
void parallel_range(size_t n, F&& f) {
#pragma omp parallel
  {
    const auto [lo, hi] = thread_range(n);
    if (lo < hi) f(lo, hi);
  }
}

}  // namespace cr::cpu
