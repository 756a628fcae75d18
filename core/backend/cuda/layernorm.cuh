// LayerNorm kernels (the CUDA side of core/backend/cpu/layernorm.cpp), and the row/column
// machinery RMSNorm (rmsnorm.cuh) shares with them.
//
// Forward: one warp per row (kNormBlock threads = 4 rows per block). Each lane walks channels
// lane, lane + 32, ... (a warp reads 32 consecutive elements at a time: coalesced), sums in fp32
// and the warp reduces by butterfly shuffles. Two passes over the row, as the CPU op (mean, then
// the centred variance: no cancellation when |mean| >> std); the second and third reads of the
// row hit L1/L2. Storage T is float or bf16; all arithmetic is fp32.
//
// Backward: dinp is again a warp per row. dweight/dbias sum over rows, so they are computed
// deterministically in two kernels instead of with float atomics: a block per (32-column tile,
// chunk of rows) writes one partial sum per column and chunk into a scratch buffer
// [2][chunks][C], then column_partials_reduce adds the chunks in ascending order. The summation
// order depends only on N and C, never on scheduling, so runs are bit-reproducible.
#pragma once

#include <cstddef>

#include "core/backend/cuda/cuda_compat.cuh"

namespace cr::cuda {

// ---- shared with rmsnorm.cuh -----------------------------------------------------------------

constexpr int kNormBlock = 128;  // threads per row-kernel block: 4 warps, one row each
constexpr int kNormRowsPerBlock = kNormBlock / kWarpSize;
constexpr int kColTile = 32;       // columns per partial-sum block (one warp-wide row segment)
constexpr int kPartialLanes = 8;   // warps per partial-sum block, each walking its own rows
constexpr int kPartialBlock = kColTile * kPartialLanes;
constexpr int kMinChunkRows = 64;  // rows summed by one partial-sum block (at least)
constexpr int kMaxGridY = 65535;

// The row this warp owns and this thread's lane in it (row-kernel geometry).
CR_DEV int norm_row() {
  return (int)blockIdx.x * kNormRowsPerBlock + (int)threadIdx.x / kWarpSize;
}
CR_DEV int lane_id() { return (int)threadIdx.x % kWarpSize; }

// Row chunking of the parameter-gradient partial sums: chunk_rows(N) rows per chunk, so the
// chunk count (grid.y) stays within CUDA's 65535 limit for any N.
inline int norm_chunk_rows(int N) {
  return (int)(ceil_div(N, kMaxGridY) > kMinChunkRows ? ceil_div(N, kMaxGridY) : kMinChunkRows);
}
inline int norm_chunks(int N) { return (int)ceil_div(N, norm_chunk_rows(N)); }
inline dim3 norm_row_grid(int N) { return dim3((unsigned)ceil_div(N, kNormRowsPerBlock)); }
inline dim3 norm_partial_grid(int N, int C) {
  return dim3((unsigned)ceil_div(C, kColTile), (unsigned)norm_chunks(N));
}

// The partial-sum block's thread roles: column c of the tile, and the row lane (warp) that
// walks rows n0 + lane, n0 + lane + kPartialLanes, ... of the chunk [n0, n1).
struct PartialRole {
  int tx, lane, c, n0, n1;
};
CR_DEV PartialRole partial_role(int N, int chunk_rows) {
  PartialRole r;
  r.tx = (int)threadIdx.x % kColTile;
  r.lane = (int)threadIdx.x / kColTile;
  r.c = (int)blockIdx.x * kColTile + r.tx;
  r.n0 = (int)blockIdx.y * chunk_rows;
  r.n1 = imin(r.n0 + chunk_rows, N);
  return r;
}

// Adds the kPartialLanes row lanes' sums of one column (in lane order) and stores the chunk's
// partial at partial[blockIdx.y * C + c]. Every thread of the block must call it (a barrier).
// lanes_smem: the block's CR_SHARED(float, _, kPartialBlock) array.
template <class Smem>
CR_DEV void store_column_partial(float* partial, Smem& lanes_smem, float v, const PartialRole& r,
                                 int C) {
  lanes_smem[threadIdx.x] = v;
  __syncthreads();
  if (r.lane == 0 && r.c < C) {
    float s = 0.f;
    for (int k = 0; k < kPartialLanes; k++) s += lanes_smem[k * kColTile + r.tx];
    partial[(size_t)blockIdx.y * C + r.c] = s;
  }
}

// dst0[c] += sum_p partial[p * C + c]; dst1 (may be null) likewise from partial[(P + p) * C + c].
// Chunks are added in ascending order: a fixed order. (static: this header is included by
// several .cu files, and a non-template kernel would otherwise be defined in each.)
static __global__ void column_partials_reduce_kernel(float* dst0, float* dst1, const float* partial,
                                              int P, int C) {
  const int c = (int)(blockIdx.x * blockDim.x + threadIdx.x);
  if (c >= C) return;  // no barrier in this kernel
  float s = 0.f;
  for (int p = 0; p < P; p++) s += partial[(size_t)p * C + c];
  dst0[c] += s;
  if (dst1) {
    float t = 0.f;
    for (int p = 0; p < P; p++) t += partial[(size_t)(P + p) * C + c];
    dst1[c] += t;
  }
}

template <class L>
void run_column_partials_reduce(const L& launch, float* dst0, float* dst1, const float* partial,
                                int P, int C) {
  constexpr int kBlock = 256;
  launch(dim3((unsigned)ceil_div(C, kBlock)), dim3(kBlock), column_partials_reduce_kernel, dst0,
         dst1, partial, P, C);
}

// ---- LayerNorm -------------------------------------------------------------------------------

// The output element. forward and apply both call this one expression, so a recompute from the
// saved mean/rstd rebuilds the forward output bit for bit.
CR_DEV float layernorm_value(float x, float m, float s, float w, float b) {
  return (x - m) * s * w + b;
}

// One row by one warp: saves mean and rstd (lane 0) and writes o.
template <class T>
CR_DEV void layernorm_row(T* o, float* mean, float* rstd, const T* x, const T* weight,
                          const T* bias, int C, float eps, int lane) {
  float sum = 0.f;
  for (int c = lane; c < C; c += kWarpSize) sum += to_f32(x[c]);
  const float m = warp_sum(sum) / (float)C;
  float sq = 0.f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float d = to_f32(x[c]) - m;
    sq += d * d;
  }
  const float s = 1.f / sqrtf(warp_sum(sq) / (float)C + eps);
  for (int c = lane; c < C; c += kWarpSize)
    o[c] = from_f32<T>(layernorm_value(to_f32(x[c]), m, s, to_f32(weight[c]), to_f32(bias[c])));
  if (lane == 0) {
    *mean = m;
    *rstd = s;
  }
}

template <class T>
__global__ void layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* inp,
                                         const T* weight, const T* bias, int N, int C,
                                         float eps) {
  const int row = norm_row();
  if (row >= N) return;  // whole warps leave together; no block barrier in this kernel
  const size_t off = (size_t)row * C;
  layernorm_row(out + off, mean + row, rstd + row, inp + off, weight, bias, C, eps, lane_id());
}

template <class T>
__global__ void layernorm_apply_kernel(T* out, const T* inp, const float* mean, const float* rstd,
                                       const T* weight, const T* bias, int N, int C) {
  const int row = norm_row();
  if (row >= N) return;
  const size_t off = (size_t)row * C;
  const float m = mean[row], s = rstd[row];
  for (int c = lane_id(); c < C; c += kWarpSize)
    out[off + c] = from_f32<T>(
        layernorm_value(to_f32(inp[off + c]), m, s, to_f32(weight[c]), to_f32(bias[c])));
}

// x = a + b stored in T, then the norm of x as stored (rounded to T), so forward and a later
// layernorm_apply/backward on the saved x see the same numbers. Each lane reads back only the
// channels it wrote itself (same lane stride in both loops): no cross-thread dependency.
template <class T>
__global__ void residual_layernorm_forward_kernel(T* x, T* out, float* mean, float* rstd,
                                                  const T* a, const T* b, const T* weight,
                                                  const T* bias, int N, int C, float eps) {
  const int row = norm_row();
  if (row >= N) return;
  const size_t off = (size_t)row * C;
  const int lane = lane_id();
  for (int c = lane; c < C; c += kWarpSize)
    x[off + c] = from_f32<T>(to_f32(a[off + c]) + to_f32(b[off + c]));
  layernorm_row(out + off, mean + row, rstd + row, x + off, weight, bias, C, eps, lane);
}

// dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), dnorm = dout * weight.
template <class T>
__global__ void layernorm_backward_dinp_kernel(T* dinp, const T* dout, const T* inp,
                                               const T* weight, const float* mean,
                                               const float* rstd, int N, int C) {
  const int row = norm_row();
  if (row >= N) return;
  const size_t off = (size_t)row * C;
  const int lane = lane_id();
  const float m = mean[row], s = rstd[row];
  float dn_sum = 0.f, dn_norm_sum = 0.f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float dn = to_f32(dout[off + c]) * to_f32(weight[c]);
    dn_sum += dn;
    dn_norm_sum += dn * (to_f32(inp[off + c]) - m) * s;
  }
  const float dn_mean = warp_sum(dn_sum) / (float)C;
  const float dn_norm_mean = warp_sum(dn_norm_sum) / (float)C;
  for (int c = lane; c < C; c += kWarpSize) {
    const float norm = (to_f32(inp[off + c]) - m) * s;
    const float dn = to_f32(dout[off + c]) * to_f32(weight[c]);
    dinp[off + c] = from_f32<T>(to_f32(dinp[off + c]) + (dn - dn_mean - norm * dn_norm_mean) * s);
  }
}

// partial [2][gridDim.y][C]: per chunk of rows, sum dout * norm (dweight) and sum dout (dbias).
template <class T>
__global__ void layernorm_param_partials_kernel(float* partial, const T* dout, const T* inp,
                                                const float* mean, const float* rstd, int N,
                                                int C, int chunk_rows) {
  CR_SHARED(float, lanes, kPartialBlock);
  const PartialRole r = partial_role(N, chunk_rows);
  float dw = 0.f, db = 0.f;
  if (r.c < C) {
    for (int n = r.n0 + r.lane; n < r.n1; n += kPartialLanes) {
      const size_t i = (size_t)n * C + r.c;
      const float d = to_f32(dout[i]);
      dw += d * ((to_f32(inp[i]) - mean[n]) * rstd[n]);
      db += d;
    }
  }
  store_column_partial(partial, lanes, dw, r, C);
  __syncthreads();  // the lanes buffer is reused for the second sum
  store_column_partial(partial + (size_t)gridDim.y * C, lanes, db, r, C);
}

// ---- launchers (shapes: inp/out/x/a/b/dout/dinp [N,C] of T; weight, bias [C] of T; mean, rstd
// [N] f32; dweight, dbias [C] f32, accumulated) --------------------------------------------------

// Bytes moved: N*C*sizeof(T) read (+ two cached re-reads), N*C*sizeof(T) written, 8N for stats.
template <class L, class T>
void run_layernorm_forward(const L& launch, T* out, float* mean, float* rstd, const T* inp,
                           const T* weight, const T* bias, int N, int C, float eps) {
  launch(norm_row_grid(N), dim3(kNormBlock), layernorm_forward_kernel<T>, out, mean, rstd, inp,
         weight, bias, N, C, eps);
}

// Bytes moved: N*C*sizeof(T) read and written, 8N of stats read.
template <class L, class T>
void run_layernorm_apply(const L& launch, T* out, const T* inp, const float* mean,
                         const float* rstd, const T* weight, const T* bias, int N, int C) {
  launch(norm_row_grid(N), dim3(kNormBlock), layernorm_apply_kernel<T>, out, inp, mean, rstd,
         weight, bias, N, C);
}

// Bytes moved: 2*N*C*sizeof(T) read (a, b), 2*N*C*sizeof(T) written (x, out), 8N of stats.
template <class L, class T>
void run_residual_layernorm_forward(const L& launch, T* x, T* out, float* mean, float* rstd,
                                    const T* a, const T* b, const T* weight, const T* bias, int N,
                                    int C, float eps) {
  launch(norm_row_grid(N), dim3(kNormBlock), residual_layernorm_forward_kernel<T>, x, out, mean,
         rstd, a, b, weight, bias, N, C, eps);
}

// The f32 scratch layernorm_backward needs: [2][chunks][C].
inline size_t layernorm_backward_scratch_floats(int N, int C) {
  return 2 * (size_t)norm_chunks(N) * (size_t)C;
}

// scratch: layernorm_backward_scratch_floats(N, C) floats, overwritten.
// Bytes moved: dinp kernel reads dout, inp, dinp and writes dinp (4*N*C*sizeof(T)); the partial
// kernel reads dout and inp again (2*N*C*sizeof(T)); partials 2*chunks*C*4 written and read.
template <class L, class T>
void run_layernorm_backward(const L& launch, T* dinp, float* dweight, float* dbias,
                            float* scratch, const T* dout, const T* inp, const T* weight,
                            const float* mean, const float* rstd, int N, int C) {
  if (N <= 0 || C <= 0) return;
  launch(norm_row_grid(N), dim3(kNormBlock), layernorm_backward_dinp_kernel<T>, dinp, dout, inp,
         weight, mean, rstd, N, C);
  launch(norm_partial_grid(N, C), dim3(kPartialBlock), layernorm_param_partials_kernel<T>, scratch,
         dout, inp, mean, rstd, N, C, norm_chunk_rows(N));
  run_column_partials_reduce(launch, dweight, dbias, scratch, norm_chunks(N), C);
}

}  // namespace cr::cuda
