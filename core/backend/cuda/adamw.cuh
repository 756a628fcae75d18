// The optimizer kernels (the CUDA side of core/backend/cpu/adamw.cpp): one AdamW step over the
// segments of flat f32 buffers, and the deterministic sum of squares behind the gradient norm.
//
// AdamW: the host turns the segment table into a block plan (adamw_plan): segment k gets
// ceil(n_k / kAdamWPerBlock) consecutive blocks starting at first_block, so one launch covers
// every tensor with no idle blocks however ragged the sizes are. The plan (a few hundred entries)
// lives in device memory; each block finds its entry by binary search. The per-segment decay
// 1 - lr*wd and the bias corrections are computed on the host with the CPU op's exact
// expressions.
//
// sum_squares: a fixed grid (sum_squares_blocks(n): a function of n only) of per-block partials
// in double, each over a fixed grid-stride set of elements and reduced in a fixed tree; then one
// block sums the partials in a fixed order. Same bits on every run for a given n.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "core/backend/cuda/cuda_compat.cuh"

namespace cr::cuda {

// ---- AdamW -------------------------------------------------------------------------------------

constexpr int kAdamWBlock = 256;
constexpr int kAdamWPerThread = 4;
constexpr int kAdamWPerBlock = kAdamWBlock * kAdamWPerThread;

// One entry of the block plan: elements [offset, offset + n) of the flat buffers, decay =
// 1 - lr * weight_decay, handled by blocks [first_block, first_block + ceil(n / kAdamWPerBlock)).
struct AdamWPlanEntry {
  size_t offset, n;
  float decay;
  unsigned first_block;
};
constexpr unsigned long long kAdamWMaxBlocks = 0x7fffffffull;  // gridDim.x limit

// Host: the plan for segments segs[0..nsegs) (anything with offset, n, weight_decay: the
// Backend's or the CPU op's AdamWSegment); empty segments are dropped. Returns the number of
// blocks to launch (the caller checks it against kAdamWMaxBlocks, the grid limit).
template <class Seg>
unsigned long long adamw_plan(std::vector<AdamWPlanEntry>& plan, const Seg* segs, size_t nsegs,
                              float lr) {
  plan.clear();
  unsigned long long blocks = 0;
  for (size_t k = 0; k < nsegs; k++) {
    if (segs[k].n == 0) continue;
    const float decay = 1.f - lr * segs[k].weight_decay;
    plan.push_back({segs[k].offset, segs[k].n, decay, (unsigned)blocks});
    blocks += (unsigned long long)ceil_div((long long)segs[k].n, kAdamWPerBlock);
  }
  return blocks;
}

// params, grads, m, v: the flat f32 buffers; plan: nplan >= 1 entries in device memory.
// bc1 = 1 - beta1^step, bc2 = 1 - beta2^step.
static __global__ void adamw_kernel(float* params, const float* grads, float* m, float* v,
                                    const AdamWPlanEntry* plan, int nplan, float lr, float beta1,
                                    float beta2, float eps, float bc1, float bc2) {
  CR_SHARED(int, entry, 1);
  if (threadIdx.x == 0) {  // the last entry whose first block is <= this block
    int lo = 0, hi = nplan - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (plan[mid].first_block <= blockIdx.x) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    entry[0] = lo;
  }
  __syncthreads();
  const AdamWPlanEntry e = plan[entry[0]];
  const size_t base = (size_t)(blockIdx.x - e.first_block) * kAdamWPerBlock;
  for (int j = 0; j < kAdamWPerThread; j++) {
    const size_t k = base + (size_t)j * blockDim.x + threadIdx.x;
    if (k >= e.n) break;
    const size_t i = e.offset + k;
    const float g = grads[i];
    const float mi = beta1 * m[i] + (1.f - beta1) * g;
    const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi / bc2) + eps;
    params[i] = params[i] * e.decay - lr * (mi / bc1) / denom;
  }
}

// plan/nplan/blocks from adamw_plan (plan copied to device memory); step counts from 1.
template <class L>
void run_adamw(const L& launch, float* params, const float* grads, float* m, float* v,
               const AdamWPlanEntry* plan, int nplan, unsigned blocks, float lr, float beta1,
               float beta2, float eps, int step) {
  // The CPU op's exact expressions (float pow), so the bias corrections agree bit for bit.
  const float bc1 = 1.f - std::pow(beta1, (float)step);
  const float bc2 = 1.f - std::pow(beta2, (float)step);
  if (nplan == 0) return;
  launch(dim3(blocks), dim3(kAdamWBlock), adamw_kernel, params, grads, m, v, plan, nplan, lr,
         beta1, beta2, eps, bc1, bc2);
}

// ---- sum of squares ----------------------------------------------------------------------------

constexpr int kSumSqBlock = 256;
constexpr int kSumSqWarps = kSumSqBlock / kWarpSize;
constexpr int kSumSqMaxBlocks = 1024;

// Partial-sum blocks for n elements (>= 1, so the result is written even when n == 0); the
// caller provides that many doubles of partials.
inline int sum_squares_blocks(size_t n) {
  const long long want = ceil_div((long long)n, (long long)kSumSqBlock * 16);
  return (int)(want < 1 ? 1 : want > kSumSqMaxBlocks ? kSumSqMaxBlocks : want);
}

namespace sumsq_detail {

CR_DEV double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// The block's total, valid in thread 0. warp_buf: CR_SHARED double[kSumSqWarps].
template <class S>
CR_DEV double block_sum_d(double v, S& warp_buf) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  v = warp_sum_d(v);
  if (lane == 0) warp_buf[warp] = v;
  __syncthreads();
  return warp_sum_d(lane < kSumSqWarps ? warp_buf[lane] : 0.0);
}

}  // namespace sumsq_detail

// partial[blockIdx.x] = sum of x[i]^2 over i = blockIdx.x*blockDim.x + threadIdx.x + k*stride.
static __global__ void sum_squares_partial_kernel(double* partial, const float* x, size_t n) {
  CR_SHARED(double, warp_buf, kSumSqWarps);
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  double s = 0.0;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double xi = x[i];
    s += xi * xi;
  }
  s = sumsq_detail::block_sum_d(s, warp_buf);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// out[0] = sum of partial[0..nparts), one block.
static __global__ void sum_squares_final_kernel(double* out, const double* partial,
                                                int nparts) {
  CR_SHARED(double, warp_buf, kSumSqWarps);
  double s = 0.0;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += partial[i];
  s = sumsq_detail::block_sum_d(s, warp_buf);
  if (threadIdx.x == 0) out[0] = s;
}

// out[0] = sum x[0..n)^2; partial: sum_squares_blocks(n) doubles of device scratch.
template <class L>
void run_sum_squares(const L& launch, double* out, double* partial, const float* x, size_t n) {
  const int blocks = sum_squares_blocks(n);
  launch(dim3(blocks), dim3(kSumSqBlock), sum_squares_partial_kernel, partial, x, n);
  launch(dim3(1), dim3(kSumSqBlock), sum_squares_final_kernel, out, partial, blocks);
}

}  // namespace cr::cuda
