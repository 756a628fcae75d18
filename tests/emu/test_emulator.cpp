// Self-tests of the CUDA emulator (tests/emu/cuda_emu.h): correct kernels give CUDA's answers,
// and every class of bug it claims to catch makes the launch throw KernelError (never hang).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/backend/cuda/cuda_compat.cuh"
#include "core/tensor/bf16.h"

namespace {

using cr::emu::KernelError;
using cr::emu::Launch;

// Runs fn on another thread; a launch that does not return within the limit is a hang, which
// fails the whole test binary at once (a hung launch cannot be cancelled).
template <class F>
void within_seconds(double seconds, F&& fn) {
  auto fut = std::async(std::launch::async, std::forward<F>(fn));
  if (fut.wait_for(std::chrono::duration<double>(seconds)) == std::future_status::timeout) {
    std::fprintf(stderr, "emulator test hung for %.0f s: aborting\n", seconds);
    std::fflush(stderr);
    std::abort();
  }
  fut.get();  // rethrows gtest-unrelated exceptions from fn
}

// Launches and returns the KernelError message ("" when the launch succeeded).
template <class... KArgs, class... Args>
std::string launch_error(dim3 grid, dim3 block, void (*kernel)(KArgs...), Args... args) {
  std::string msg;
  within_seconds(60, [&] {
    try {
      Launch{}(grid, block, kernel, args...);
    } catch (const KernelError& e) {
      msg = e.what();
    }
  });
  return msg;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::string at_line(int line) { return "test_emulator.cpp:" + std::to_string(line); }

// ---- block-sum reduction: warp shuffles, shared memory, a barrier -------------------------------

// out[row] = sum of x[row, 0:C); one block per row, blockDim.x a multiple of 32. kSync = false is
// the same kernel with its reduction barrier removed.
template <bool kSync>
__global__ void row_sum(const float* x, int C, float* out) {
  CR_SHARED(float, partial, 32);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int nwarps = blockDim.x / 32;
  if (tid < 32) partial[tid] = 0.0f;  // so that a missing barrier below reads as a race
  __syncthreads();
  float v = 0.0f;
  for (int i = tid; i < C; i += blockDim.x) v += x[(long long)blockIdx.x * C + i];
  v = cr::cuda::warp_sum(v);
  if (lane == 0) partial[warp] = v;
  if constexpr (kSync) __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? (float)partial[lane] : 0.0f;
    v = cr::cuda::warp_sum(v);
    if (lane == 0) out[blockIdx.x] = v;
  }
}

std::vector<float> random_vec(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& e : v) e = d(rng);
  return v;
}

TEST(Emulator, BlockSumReductionRaggedSizes) {
  unsigned seed = 1;
  for (int threads : {32, 96, 256}) {
    for (int C : {1, 31, 33, 100, 257, 1000}) {
      const int rows = 3;
      const auto x = random_vec((size_t)rows * C, seed++);
      std::vector<float> out(rows, std::numeric_limits<float>::quiet_NaN());
      Launch{}(dim3(rows), dim3(threads), row_sum<true>, x.data(), C, out.data());
      for (int r = 0; r < rows; ++r) {
        double ref = 0;
        for (int i = 0; i < C; ++i) ref += x[(size_t)r * C + i];
        EXPECT_NEAR(out[r], ref, 1e-5 * (1 + std::fabs(ref)) + 1e-5)
            << "threads " << threads << " C " << C << " row " << r;
      }
    }
  }
}

TEST(Emulator, MissingBarrierIsARace) {
  const int C = 300, rows = 2;
  const auto x = random_vec((size_t)rows * C, 7);
  std::vector<float> out(rows);
  for (int rep = 0; rep < 5; ++rep) {  // whatever the thread interleaving
    const std::string msg =
        launch_error(dim3(rows), dim3(128), row_sum<false>, x.data(), C, out.data());
    EXPECT_TRUE(contains(msg, "shared-memory race on partial[")) << msg;
    EXPECT_TRUE(contains(msg, "block (0,0,0)")) << msg;
  }
}

// A race check must not cry wolf: a classic tree reduction with a barrier per level.
__global__ void tree_sum(const float* x, float* out) {
  CR_SHARED(float, s, 256);
  const unsigned t = threadIdx.x;
  s[t] = x[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

TEST(Emulator, TreeReductionHasNoFalseRace) {
  const auto x = random_vec(4 * 256, 3);
  std::vector<float> out(4);
  Launch{}(dim3(4), dim3(256), tree_sum, x.data(), out.data());
  for (int b = 0; b < 4; ++b) {
    double ref = 0;
    for (int i = 0; i < 256; ++i) ref += x[b * 256 + i];
    EXPECT_NEAR(out[b], ref, 1e-4);
  }
}

__global__ void write_write(float* out) {
  CR_SHARED(float, s, 4);
  s[0] = (float)threadIdx.x;  // every thread writes the same element
  __syncthreads();
  if (threadIdx.x == 0) out[0] = s[0];
}

TEST(Emulator, WriteWriteRaceAndRaceCheckSwitch) {
  float out = 0;
  EXPECT_TRUE(contains(launch_error(dim3(1), dim3(2), write_write, &out), "race on s[0]"));
  Launch no_race_check;
  no_race_check.race_check = false;
  EXPECT_NO_THROW(no_race_check(dim3(1), dim3(2), write_write, &out));
}

// Every proxy operation on an int array, each thread on its own element, then a neighbour's.
__global__ void shared_ops(int* out) {
  CR_SHARED(int, s, 64);
  const int t = threadIdx.x;
  s[t] = 10 * t + 7;
  s[t] += 5;
  s[t] -= 2;
  s[t] *= 3;
  s[t] /= 3;
  s[t] %= 1000;
  s[t] |= 1;
  s[t] &= ~2;
  s[t] ^= 4;
  ++s[t];
  const int before = s[t]++;
  --s[t];
  s[t]--;
  __syncthreads();
  const int n = blockDim.x;
  out[t] = s[(t + 1) % n] + before - before;  // a read of the neighbour's element
  CR_SHARED(int, s2, 64);
  s2[t] = s[(t + 1) % n];  // proxy-to-proxy copy (between two arrays: no race)
  out[n + t] = s2[t];
}

TEST(Emulator, SharedProxyOperators) {
  std::vector<int> out(128);
  Launch{}(dim3(1), dim3(64), shared_ops, out.data());
  for (int t = 0; t < 64; ++t) {
    const int u = (t + 1) % 64;
    int v = 10 * u + 7;
    v = ((((v + 5 - 2) * 3 / 3) % 1000 | 1) & ~2) ^ 4;
    v = v + 1 + 1 - 1 - 1;
    EXPECT_EQ(out[t], v) << t;
    EXPECT_EQ(out[64 + t], v) << t;
  }
}

// A proxy-to-proxy copy reads a neighbour's element in the same interval: a race.
__global__ void shift_without_barrier() {
  CR_SHARED(float, s, 32);
  s[threadIdx.x] = 1.0f;
  __syncthreads();
  s[threadIdx.x] = s[(threadIdx.x + 1) % 32];
}

TEST(Emulator, ProxyCopyRaceIsReported) {
  const std::string msg = launch_error(dim3(1), dim3(32), shift_without_barrier);
  EXPECT_TRUE(contains(msg, "race on s[")) << msg;
}

// ---- barriers ------------------------------------------------------------------------------------

constexpr int kEarlyBarrierLine = __LINE__ + 4;
__global__ void early_return(int* out, int who) {
  if ((int)threadIdx.x == who) return;
  out[threadIdx.x] = 1;
  __syncthreads();
}

TEST(Emulator, EarlyReturnBeforeBarrierIsReported) {
  std::vector<int> out(64);
  for (int who : {0, 5, 63}) {
    const std::string msg = launch_error(dim3(2), dim3(64), early_return, out.data(), who);
    EXPECT_TRUE(contains(msg, "early return")) << msg;
    EXPECT_TRUE(contains(msg, at_line(kEarlyBarrierLine))) << msg;
  }
}

constexpr int kBarrierA = __LINE__ + 3, kBarrierB = __LINE__ + 5;
__global__ void divergent_barrier() {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

TEST(Emulator, DivergentBarriersAreReported) {
  const std::string msg = launch_error(dim3(1), dim3(64), divergent_barrier);
  EXPECT_TRUE(contains(msg, "divergent __syncthreads()")) << msg;
  EXPECT_TRUE(contains(msg, at_line(kBarrierA))) << msg;
  EXPECT_TRUE(contains(msg, at_line(kBarrierB))) << msg;
}

// Lane 0 waits at a barrier while its warp-mates wait at a shuffle: neither can complete.
__global__ void barrier_vs_shuffle(float* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  }
}

TEST(Emulator, BarrierShuffleDeadlockIsReported) {
  std::vector<float> out(32);
  const std::string msg = launch_error(dim3(1), dim3(32), barrier_vs_shuffle, out.data());
  EXPECT_TRUE(contains(msg, "deadlock")) << msg;
}

// ---- warp shuffles vs a scalar model of CUDA's rules -------------------------------------------

enum Op { kIdx, kXor, kDown, kUp };

constexpr int kWidths[] = {1, 2, 4, 8, 16, 32};
constexpr int kArgs[] = {0, 1, 2, 3, 5, 8, 16, 31, 33};
constexpr int kCases = 6 * 9;

// out[case * blockDim.x + t] for every (width, arg) case of one shuffle op.
template <class T>
__global__ void shuffle_kernel(const T* in, T* out, int op) {
  const unsigned t = threadIdx.x;
  const T v = in[t];
  for (int c = 0; c < kCases; ++c) {
    const int width = kWidths[c / 9], arg = kArgs[c % 9];
    T r{};
    if (op == kIdx) r = __shfl_sync(0xffffffffu, v, arg + (int)(t % 3), width);  // per lane
    if (op == kXor) r = __shfl_xor_sync(0xffffffffu, v, arg, width);
    if (op == kDown) r = __shfl_down_sync(0xffffffffu, v, (unsigned)arg, width);
    if (op == kUp) r = __shfl_up_sync(0xffffffffu, v, (unsigned)arg, width);
    out[c * blockDim.x + t] = r;
  }
}

// The lane whose value thread t (lane l = t % 32) receives, from the CUDA programming guide's
// wording.
int model_source(int op, int t, int arg, int width) {
  const int l = t % 32, seg = l / width * width, in_seg = l % width;
  switch (op) {
    case kIdx: return seg + (arg + t % 3) % width;
    case kXor: {
      const int j = l ^ arg;
      return j < seg + width ? j : l;  // earlier segments yes, later ones no
    }
    case kDown: return in_seg + arg < width ? l + arg : l;
    case kUp: return in_seg >= arg ? l - arg : l;
  }
  return -1;
}

template <class T>
void check_shuffles() {
  const int n = 64;  // two warps
  std::vector<T> in(n), out(n * kCases);
  for (int i = 0; i < n; ++i) in[i] = (T)(3 * i + 1);
  for (int op : {kIdx, kXor, kDown, kUp}) {
    std::fill(out.begin(), out.end(), T(-7));
    Launch{}(dim3(1), dim3(n), shuffle_kernel<T>, in.data(), out.data(), op);
    for (int c = 0; c < kCases; ++c) {
      const int width = kWidths[c / 9], arg = kArgs[c % 9];
      for (int t = 0; t < n; ++t) {
        const int src = t / 32 * 32 + model_source(op, t, arg, width);
        ASSERT_EQ(out[c * n + t], in[src])
            << "op " << op << " width " << width << " arg " << arg << " thread " << t;
      }
    }
  }
}

TEST(Emulator, ShufflesMatchScalarModel) {
  check_shuffles<float>();
  check_shuffles<int>();
  check_shuffles<unsigned>();
  check_shuffles<double>();
}

__global__ void shuffle_any(float* out) {
  out[threadIdx.y * blockDim.x + threadIdx.x] = cr::cuda::warp_sum(1.0f);
}

TEST(Emulator, ShuffleNeedsWholeWarps) {
  std::vector<float> out(64);
  const std::string msg = launch_error(dim3(1), dim3(48), shuffle_any, out.data());
  EXPECT_TRUE(contains(msg, "multiple of 32")) << msg;
  Launch{}(dim3(1), dim3(16, 2), shuffle_any, out.data());  // 32 threads in 2-D: fine
  EXPECT_EQ(out[0], 32.0f);
}

constexpr int kShflA = __LINE__ + 3, kShflB = __LINE__ + 5;
__global__ void divergent_shuffle(float* out) {
  if (threadIdx.x % 2) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  } else {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 2.0f, 1);
  }
}

TEST(Emulator, DivergentShuffleIsReported) {
  std::vector<float> out(32);
  const std::string msg = launch_error(dim3(1), dim3(32), divergent_shuffle, out.data());
  EXPECT_TRUE(contains(msg, "divergent warp")) << msg;
  EXPECT_TRUE(contains(msg, at_line(kShflA)) && contains(msg, at_line(kShflB))) << msg;
}

__global__ void early_return_shuffle(float* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = cr::cuda::warp_sum(1.0f);
}

TEST(Emulator, EarlyReturnBeforeShuffleIsReported) {
  std::vector<float> out(32);
  const std::string msg = launch_error(dim3(1), dim3(32), early_return_shuffle, out.data());
  EXPECT_TRUE(contains(msg, "early return")) << msg;
}

// ---- atomics -------------------------------------------------------------------------------------

__global__ void atomics(int* counter, int* old_values, float* fsum, double* dsum, unsigned* usum) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  old_values[i] = atomicAdd(counter, 1);
  atomicAdd(fsum, 1.0f);  // exact in float up to 2^24
  atomicAdd(dsum, 0.5);
  atomicAdd(usum, 3u);
}

TEST(Emulator, AtomicAddSumsOverManyThreads) {
  const int blocks = 4, threads = 256, n = blocks * threads;
  int counter = 0;
  float fsum = 0;
  double dsum = 0;
  unsigned usum = 0;
  std::vector<int> old(n, -1);
  Launch{}(dim3(blocks), dim3(threads), atomics, &counter, old.data(), &fsum, &dsum, &usum);
  EXPECT_EQ(counter, n);
  EXPECT_EQ(fsum, (float)n);
  EXPECT_EQ(dsum, 0.5 * n);
  EXPECT_EQ(usum, 3u * n);
  std::sort(old.begin(), old.end());
  for (int i = 0; i < n; ++i) ASSERT_EQ(old[i], i);  // each old value returned exactly once
}

// ---- shared-memory misuse -----------------------------------------------------------------------

__global__ void out_of_range(int offset) {
  CR_SHARED(float, buf, 32);
  buf[(int)threadIdx.x + offset] = 1.0f;
}

TEST(Emulator, SharedIndexOutOfRangeIsReported) {
  EXPECT_TRUE(contains(launch_error(dim3(1), dim3(32), out_of_range, 1), "out of range [0, 32)"));
  EXPECT_TRUE(contains(launch_error(dim3(1), dim3(32), out_of_range, -1), "index -1 out of range"));
  EXPECT_EQ(launch_error(dim3(1), dim3(32), out_of_range, 0), "");
}

// Block 0 writes before it reads; block 1 reads what only block 0 wrote.
__global__ void read_before_write(float* out) {
  CR_SHARED(float, buf, 64);
  if (blockIdx.x == 0) buf[threadIdx.x] = 1.0f;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = buf[threadIdx.x];
}

TEST(Emulator, ReadBeforeWriteIsReportedPerBlock) {
  std::vector<float> out(128);
  const std::string msg = launch_error(dim3(2), dim3(64), read_before_write, out.data());
  EXPECT_TRUE(contains(msg, "before any thread of this block wrote it")) << msg;
  EXPECT_TRUE(contains(msg, "block (1,0,0)")) << msg;
  EXPECT_EQ(out[0], 1.0f);  // block 0 was fine
}

// ---- exceptions, geometry ----------------------------------------------------------------------

__global__ void throws(int who) {
  if ((int)threadIdx.x == who) throw std::runtime_error("boom from a kernel");
  __syncthreads();  // the others wait here and must be released
}

TEST(Emulator, KernelExceptionPropagates) {
  const std::string msg = launch_error(dim3(3), dim3(128), throws, 77);
  EXPECT_TRUE(contains(msg, "boom from a kernel")) << msg;
  EXPECT_TRUE(contains(msg, "thread (77,0,0)")) << msg;
}

__global__ void ids(int* out) {
  const int bx = blockIdx.x, by = blockIdx.y, bz = blockIdx.z;
  const int block = (bz * gridDim.y + by) * gridDim.x + bx;
  const int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const int nthreads = blockDim.x * blockDim.y * blockDim.z;
  out[block * nthreads + thread] =
      ((((bz * 10 + by) * 10 + bx) * 10 + (int)threadIdx.z) * 10 + (int)threadIdx.y) * 10 +
      (int)threadIdx.x;
}

TEST(Emulator, MultiDimensionalGridsAndBlocksIndexCorrectly) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  std::vector<int> out(3 * 2 * 2 * 4 * 3 * 2, -1);
  Launch{}(grid, block, ids, out.data());
  int k = 0;
  for (int bz = 0; bz < 2; ++bz)
    for (int by = 0; by < 2; ++by)
      for (int bx = 0; bx < 3; ++bx)
        for (int tz = 0; tz < 2; ++tz)
          for (int ty = 0; ty < 3; ++ty)
            for (int tx = 0; tx < 4; ++tx)
              ASSERT_EQ(out[k++], ((((bz * 10 + by) * 10 + bx) * 10 + tz) * 10 + ty) * 10 + tx);
}

__global__ void block_order(int* order, int* next) {
  if (threadIdx.x == 0) order[atomicAdd(next, 1)] = blockIdx.x + 10 * blockIdx.y;
}

TEST(Emulator, BlocksRunInOrderOrReversed) {
  std::vector<int> order(6, -1);
  int next = 0;
  Launch{}(dim3(3, 2), dim3(32), block_order, order.data(), &next);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 10, 11, 12}));
  next = 0;
  Launch{.race_check = true, .reverse_blocks = true}(dim3(3, 2), dim3(32), block_order,
                                                      order.data(), &next);
  EXPECT_EQ(order, (std::vector<int>{12, 11, 10, 2, 1, 0}));
}

TEST(Emulator, EmptyGridDoesNothingAndBadBlockThrows) {
  std::vector<int> out(8, -1);
  Launch{}(dim3(0), dim3(32), ids, out.data());
  Launch{}(dim3(2, 0), dim3(32), ids, out.data());
  EXPECT_EQ(out[0], -1);
  EXPECT_THROW(Launch{}(dim3(1), dim3(1025), ids, out.data()), KernelError);
  EXPECT_THROW(Launch{}(dim3(1), dim3(0), ids, out.data()), KernelError);
}

// ---- bf16 ------------------------------------------------------------------------------------------

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(Emulator, Bf16ConversionMatchesHostRounding) {
  struct Case {
    uint32_t f32;
    uint16_t bf16;
  };
  const Case cases[] = {
      {0x3f800000u, 0x3f80},  // 1.0
      {0x3f808000u, 0x3f80},  // tie, even below: down
      {0x3f818000u, 0x3f82},  // tie, odd below: up
      {0x3f808001u, 0x3f81},  // just above a tie: up
      {0x7f800000u, 0x7f80},  // +inf
      {0xff800000u, 0xff80},  // -inf
      {0x7f7fffffu, 0x7f80},  // FLT_MAX rounds to inf
      {0x80000000u, 0x8000},  // -0
      {0x00000001u, 0x0000},  // smallest denormal rounds to 0
  };
  for (const auto& c : cases) {
    const float f = from_bits(c.f32);
    const __nv_bfloat16 h = cr::cuda::from_f32<cr::cuda::bf16>(f);
    EXPECT_EQ(h.__x, c.bf16) << std::hex << c.f32;
    EXPECT_EQ(h.__x, cr::f32_to_bf16(f));
    EXPECT_EQ(cr::cuda::to_f32(h), cr::bf16_to_f32(c.bf16));
  }
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xffffffffu}) {
    const __nv_bfloat16 h = __float2bfloat16(from_bits(nan));
    EXPECT_TRUE(std::isnan(__bfloat162float(h))) << std::hex << nan;
    EXPECT_EQ(h.__x, cr::f32_to_bf16(from_bits(nan)));
  }
  std::mt19937 rng(5);
  for (int i = 0; i < 100000; ++i) {
    const float f = from_bits(rng());
    ASSERT_EQ(__float2bfloat16(f).__x, cr::f32_to_bf16(f));
  }
}

TEST(Emulator, MathHelpers) {
  EXPECT_FLOAT_EQ(rsqrtf(4.0f), 0.5f);
  EXPECT_EQ(cr::cuda::imin(3, -2), -2);
  EXPECT_EQ(fmaxf(1.0f, INFINITY), INFINITY);
}

}  // namespace
