// Token + position embedding kernels (the CUDA side of core/backend/cpu/embedding.cpp),
// vocabulary-parallel: wte holds rows [vocab_start, vocab_start + vocab_count); a token outside
// that range contributes 0 (forward) and receives nothing (backward). wpe may be null.
//
// Backward must be deterministic although two rows may share a token: float atomics would add
// the repeated rows in whatever order the GPU schedules them. Instead a first kernel links each
// row to the next row with the same token (next[n], -1 at the end of a chain) and marks the first
// row of every chain; in a second kernel the chain's first row owns it, one thread per channel
// walking it in ascending row order: acc = dwte[row]; acc += dout[n1]; ... the CPU op's order,
// so f32 results match it bit for bit. The chain search compares every pair of rows (O(N^2) int
// compares through a shared-memory tile of tokens; estimated at tens of microseconds for
// N = 8192 on an H100, unmeasured), needs no sort and no host round trip. A chain's length is the
// token's count in the batch.
// dwpe sums over the batch in b order.
#pragma once

#include <cstddef>

#include "core/backend/cuda/cuda_compat.cuh"

namespace cr::cuda {

constexpr int kEmbBlock = 128;    // forward: a row's channels strided; backward: a channel each
constexpr int kChainBlock = 128;  // rows per block in the chain search (and its token tile)

// One block per row n = b*T + t. T_ is the sequence length.
template <class T>
__global__ void embedding_forward_kernel(T* out, const int* tokens, const T* wte, const T* wpe,
                                         int T_, int C, int vocab_start, int vocab_count) {
  const int n = (int)blockIdx.x;
  const long long row = (long long)tokens[n] - vocab_start;
  const T* e = row >= 0 && row < vocab_count ? wte + row * C : nullptr;
  const T* p = wpe ? wpe + (size_t)(n % T_) * C : nullptr;
  T* o = out + (size_t)n * C;
  for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x)
    o[c] = from_f32<T>((e ? to_f32(e[c]) : 0.f) + (p ? to_f32(p[c]) : 0.f));
}

// next[n] = the smallest m > n with tokens[m] == tokens[n], or -1; first[n] = 1 when no m < n
// holds the same token, else 0. Tokens stream through a shared tile; a thread stops comparing
// once both answers are known, but keeps joining the barriers.
static __global__ void embedding_chain_kernel(int* next, int* first, const int* tokens, int N) {
  CR_SHARED(int, tile, kChainBlock);
  const int n = (int)(blockIdx.x * blockDim.x + threadIdx.x);
  const int tok = n < N ? tokens[n] : 0;
  int nxt = -1, is_first = 1;
  for (int base = 0; base < N; base += kChainBlock) {
    if (base + (int)threadIdx.x < N) tile[threadIdx.x] = tokens[base + threadIdx.x];
    __syncthreads();
    const int len = imin(kChainBlock, N - base);
    // Tiles wholly before n only decide `first`; tiles from n on only decide `next`.
    const bool wanted = n < N && (base + len <= n ? is_first == 1 : nxt < 0);
    if (wanted) {
      for (int j = 0; j < len; j++) {
        const int m = base + j;
        if (tile[j] != tok || m == n) continue;
        if (m < n) {
          is_first = 0;
        } else if (nxt < 0) {
          nxt = m;
        }
      }
    }
    __syncthreads();  // the tile is overwritten next round
  }
  if (n < N) {
    next[n] = nxt;
    first[n] = is_first;
  }
}

// Block (n, tile): row n, channels tile * blockDim.x + threadIdx.x, one per thread (so a long
// chain is walked once per channel, in parallel over the tiles). Only the first row of each
// in-shard chain works: it walks the chain in ascending row order, adding each occurrence.
template <class T>
__global__ void embedding_dwte_kernel(float* dwte, const T* dout, const int* tokens,
                                      const int* next, const int* first, int C, int vocab_start,
                                      int vocab_count) {
  const int n = (int)blockIdx.x;
  const int c = (int)(blockIdx.y * blockDim.x + threadIdx.x);
  const long long row = (long long)tokens[n] - vocab_start;
  if (c >= C || !first[n] || row < 0 || row >= vocab_count) return;  // no barrier here
  float* e = dwte + row * C + c;
  float acc = *e;
  for (int m = n; m >= 0; m = next[m]) acc += to_f32(dout[(size_t)m * C + c]);
  *e = acc;
}

// Block (t, tile): dwpe[t, c] += dout[b, t, c] for b = 0, 1, ... in order; one channel a thread.
template <class T>
__global__ void embedding_dwpe_kernel(float* dwpe, const T* dout, int B, int T_, int C) {
  const int t = (int)blockIdx.x;
  const int c = (int)(blockIdx.y * blockDim.x + threadIdx.x);
  if (c >= C) return;
  float* p = dwpe + (size_t)t * C + c;
  float acc = *p;
  for (int b = 0; b < B; b++) acc += to_f32(dout[((size_t)b * T_ + t) * C + c]);
  *p = acc;
}

// ---- launchers: tokens [B*T] i32; out/dout [B*T, C] of T; wte [vocab_count, C] of T and
// wpe [T, C] of T (may be null); dwte, dwpe f32 of the same shapes, accumulated ---------------

// Bytes moved: 2*N*C*sizeof(T) read (the wte rows and wpe), N*C*sizeof(T) written, 4N tokens.
template <class L, class T>
void run_embedding_forward(const L& launch, T* out, const int* tokens, const T* wte, const T* wpe,
                           int B, int T_, int C, int vocab_start, int vocab_count) {
  launch(dim3((unsigned)((long long)B * T_)), dim3(kEmbBlock), embedding_forward_kernel<T>, out,
         tokens, wte, wpe, T_, C, vocab_start, vocab_count);
}

// The i32 scratch embedding_backward needs: next[N] and first[N].
inline size_t embedding_backward_scratch_ints(int B, int T_) { return 2 * (size_t)B * T_; }

// scratch: embedding_backward_scratch_ints(B, T) ints, overwritten.
// Bytes moved: dout read once for dwte (each row by its chain) and once for dwpe
// (2*N*C*sizeof(T)), the touched dwte rows and dwpe read and written (f32), 4N tokens read about
// N/kChainBlock times (from L2).
template <class L, class T>
void run_embedding_backward(const L& launch, float* dwte, float* dwpe, int* scratch, const T* dout,
                            const int* tokens, int B, int T_, int C, int vocab_start,
                            int vocab_count) {
  const int N = B * T_;
  if (N <= 0 || C <= 0) return;
  int* next = scratch;
  int* first = scratch + N;
  launch(dim3((unsigned)ceil_div(N, kChainBlock)), dim3(kChainBlock), embedding_chain_kernel, next,
         first, tokens, N);
  const unsigned tiles = (unsigned)ceil_div(C, kEmbBlock);
  launch(dim3((unsigned)N, tiles), dim3(kEmbBlock), embedding_dwte_kernel<T>, dwte, dout, tokens,
         static_cast<const int*>(next), static_cast<const int*>(first), C, vocab_start,
         vocab_count);
  if (dwpe)
    launch(dim3((unsigned)T_, tiles), dim3(kEmbBlock), embedding_dwpe_kernel<T>, dwpe, dout, B,
           T_, C);
}

}  // namespace cr::cuda
