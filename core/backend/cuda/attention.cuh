// Our own grouped-query attention kernels: the fallback where cuDNN's fused SDPA is missing or
// does not apply (f32 storage, a key range per query), and the GPU-side oracle the cuDNN path is
// checked against. Semantics are exactly cr::cpu::attention_forward / _backward / _decode (ops.h):
//   qkv rows [B,T,(H + 2 Hkv) hs] laid out q|k|v; query head h reads kv head h / (H / Hkv);
//   scores (q . k) / sqrt(hs) over keys s <= t (causal), or, given kv_range int32 [B,T,2], over
//   keys lo <= s <= hi with [lo, hi] = kv_range[b, t] (document masks, prefix-LM: backend.h);
//   out [B,T,H hs]; lse [B,H,T] = log-sum-exp of the scaled scores; dqkv (same layout as qkv) is
//   overwritten.
//
// Design: simple and correct before fast. One one-warp block owns one output row: a query row for
// the forward, dQ and decode, a key row for dK/dV. It walks the other side 32 rows at a time:
// lane i scores row i of the chunk with a whole-row dot product against the block's own row
// (staged in shared memory), the 32 results go to a shared array, and after a barrier every lane
// folds the chunk into its channels (lane holds channels lane + 32 j, j < NJ, NJ = ceil(hs / 32)
// rounded up to 1, 2, 4 or 8; any hs in [1, 256] works, ragged ones such as 48 included). The
// forward is an online softmax (running max m and sum l; the accumulator is rescaled by
// exp(m_old - m_new) when the max grows), so no [T,T] matrix exists and the kernels take no
// workspace: memory is the inputs and outputs only. Every lane computes the chunk's max and
// weights itself from the same scores in the same order, every sum runs in a fixed order and
// every output element has one writer: results are bit-reproducible run to run. Storage is
// Tp = float or bf16; all arithmetic is fp32.
//
// Backward (P = exp(S - lse), D_t = dout_t . out_t, dS = P (dout V^T - D) / sqrt(hs)) is two
// kernels that each own their outputs, so no atomics: dQ (a block per query row, keys s <= t) and
// dK/dV (a block per (b, kv head, key s), over the group's query heads and queries t >= s). With
// no workspace to hold D, each kernel recomputes the dot products it needs.
//
// Key ranges: a query row walks exactly its keys [lo, hi], so the forward and dQ cost what the
// mask leaves. A key row (dK/dV) needs the queries that see it, which the range gives only
// query-side: the block first scans the T ranges (integer loads, a warp reduction) for the first
// and last query that sees its key, walks that window, and tests each query in it (the contract
// does not make the set contiguous; for causal, document and prefix-LM ranges it is). Without a
// range every kernel runs the causal loops exactly as before, bit for bit.
#pragma once

#include <type_traits>

#include "core/backend/cuda/cuda_compat.cuh"
#include "core/common/error.h"

#if defined(__CUDACC__)
#define CR_ATTN_UNROLL _Pragma("unroll")
#else
#define CR_ATTN_UNROLL
#endif

namespace cr::cuda {

namespace attention_detail {

constexpr int kMaxHeadSize = 256;

// Channel slots: lane holds channels lane + 32 j, j < NJ, of a head row; slots past hs hold 0.
template <int NJ>
CR_DEV void zero(float (&r)[NJ]) {
  CR_ATTN_UNROLL
  for (int j = 0; j < NJ; j++) r[j] = 0.f;
}

// acc += w * row[c] over this lane's channels of a global row.
template <int NJ, class Tp>
CR_DEV void add_row(float (&acc)[NJ], float w, const Tp* row, int hs, int lane) {
  CR_ATTN_UNROLL
  for (int j = 0; j < NJ; j++) {
    const int c = lane + j * kWarpSize;
    if (c < hs) acc[j] += w * to_f32(row[c]);
  }
}

template <int NJ>
CR_DEV void scale_row(float (&acc)[NJ], float s) {
  CR_ATTN_UNROLL
  for (int j = 0; j < NJ; j++) acc[j] *= s;
}

template <int NJ, class Tp>
CR_DEV void store_row(Tp* row, const float (&r)[NJ], float mul, int hs, int lane) {
  CR_ATTN_UNROLL
  for (int j = 0; j < NJ; j++) {
    const int c = lane + j * kWarpSize;
    if (c < hs) row[c] = from_f32<Tp>(r[j] * mul);
  }
}

// Shared copy of a head row (fp32): each lane writes its own channels. The caller syncs before
// any lane reads it.
template <class S, class Tp>
CR_DEV void stage_row(S& sh, const Tp* row, int hs, int lane) {
  for (int c = lane; c < hs; c += kWarpSize) sh[c] = to_f32(row[c]);
}

// sh . row over all hs channels, by one lane alone (every lane sums in the same order).
template <class S, class Tp>
CR_DEV float dot_staged(S& sh, const Tp* row, int hs) {
  float s = 0.f;
  for (int c = 0; c < hs; c++) s += sh[c] * to_f32(row[c]);
  return s;
}

// a . b over hs channels of two global rows, by one lane alone.
template <class Tp>
CR_DEV float dot_rows(const Tp* a, const Tp* b, int hs) {
  float s = 0.f;
  for (int c = 0; c < hs; c++) s += to_f32(a[c]) * to_f32(b[c]);
  return s;
}

// The keys query t of sequence b attends to, [lo, hi] inclusive: causal [0, t] without a range.
// A range outside the contract (0 <= lo <= t <= hi < T) is clamped into it, so no kernel reads
// outside the sequence: the CPU backend rejects such ranges, checking them here would cost a
// device-to-host copy.
CR_DEV void key_range(const int* kv_range, int b, int t, int T, int& lo, int& hi) {
  if (!kv_range) {
    lo = 0;
    hi = t;
    return;
  }
  const size_t i = ((size_t)b * T + t) * 2;
  lo = imax(0, imin(kv_range[i], t));
  hi = imin(T - 1, imax(kv_range[i + 1], t));
}

// The first and last query of sequence b that see key s (the causal window [s, T-1] without a
// range; first > last when none does). With a range every lane scans T / 32 ranges, then a
// butterfly of shuffles gives all lanes the block's result.
CR_DEV void query_window(const int* kv_range, int b, int s, int T, int lane, int& first,
                         int& last) {
  if (!kv_range) {
    first = s;
    last = T - 1;
    return;
  }
  first = T;
  last = -1;
  for (int t = lane; t < T; t += kWarpSize) {
    int lo, hi;
    key_range(kv_range, b, t, T, lo, hi);
    if (lo <= s && s <= hi) {
      first = imin(first, t);
      last = imax(last, t);
    }
  }
  for (int o = kWarpSize / 2; o > 0; o /= 2) {
    first = imin(first, __shfl_xor_sync(0xffffffffu, first, o));
    last = imax(last, __shfl_xor_sync(0xffffffffu, last, o));
  }
}

// ---- kernels -----------------------------------------------------------------------------------
//
// Every kernel is a one-warp block that owns one output row and walks its keys (or, for dK/dV,
// its queries) 32 at a time: lane i scores item i of the chunk with a whole-row dot product
// against a row staged in shared memory, writes the result to a 32-slot shared array, and after
// a barrier every lane folds the chunk into its own channels. Two barriers per 32 items and
// whole-block loop bounds (so no barrier is divergent); shuffles only in query_window.

// Online softmax over keys 0..n_keys-1 (k row s at k0 + s ld, v row s at v0 + s ld) for the query
// staged in qs: acc = sum p_s v_s (unnormalised), m = max score, l = sum exp(score - m).
template <int NJ, class Tp, class SQ, class SP>
CR_DEV void softmax_rows(float (&acc)[NJ], float& m, float& l, SQ& qs, SP& sc, const Tp* k0,
                         const Tp* v0, size_t ld, int n_keys, int hs, float scale, int lane) {
  zero(acc);
  m = -INFINITY;
  l = 0.f;
  for (int s0 = 0; s0 < n_keys; s0 += kWarpSize) {
    const int n = imin(kWarpSize, n_keys - s0);
    sc[lane] = lane < n ? dot_staged(qs, k0 + (size_t)(s0 + lane) * ld, hs) * scale : -INFINITY;
    __syncthreads();
    float m_new = m;  // every lane computes the same max, sum and weights from the same scores
    for (int i = 0; i < n; i++) m_new = fmaxf(m_new, sc[i]);
    const float corr = m == -INFINITY ? 0.f : expf(m - m_new);  // first chunk: nothing to rescale
    l *= corr;
    scale_row(acc, corr);
    for (int i = 0; i < n; i++) {
      const float p = expf(sc[i] - m_new);
      l += p;
      add_row(acc, p, v0 + (size_t)(s0 + i) * ld, hs, lane);
    }
    m = m_new;
    __syncthreads();  // sc is rewritten by the next chunk
  }
}

// Block per (b, h, t), blockIdx.x = (b H + h) T + t (the lse index).
template <class Tp, int NJ>
__global__ void attention_forward_kernel(Tp* out, float* lse, const Tp* qkv, int B, int T, int H,
                                         int Hkv, int hs, const int* kv_range) {
  CR_SHARED(float, qs, kMaxHeadSize);
  CR_SHARED(float, sc, kWarpSize);
  const int lane = threadIdx.x;
  const long long row = blockIdx.x;
  const int t = (int)(row % T), h = (int)(row / T % H), b = (int)(row / ((long long)T * H));
  const size_t ld = (size_t)(H + 2 * Hkv) * hs;
  const int kvh = h / (H / Hkv);
  const Tp* base = qkv + (size_t)b * T * ld;
  const Tp* k0 = base + (size_t)(H + kvh) * hs;  // key s at k0 + s ld; value s at v0 + s ld
  const Tp* v0 = k0 + (size_t)Hkv * hs;

  int lo, hi;
  key_range(kv_range, b, t, T, lo, hi);

  stage_row(qs, base + t * ld + (size_t)h * hs, hs, lane);
  __syncthreads();
  float acc[NJ], m, l;
  softmax_rows(acc, m, l, qs, sc, k0 + (size_t)lo * ld, v0 + (size_t)lo * ld, ld, hi - lo + 1, hs,
               1.f / sqrtf((float)hs), lane);
  store_row(out + ((size_t)b * T + t) * H * hs + (size_t)h * hs, acc, 1.f / l, hs, lane);
  if (lane == 0) lse[row] = m + logf(l);
}

// Decode: block per query head h over cache positions 0..len-1 (all visible).
template <class Tp, int NJ>
__global__ void attention_decode_kernel(Tp* out, const Tp* q, const Tp* kcache, const Tp* vcache,
                                        int len, int H, int Hkv, int hs) {
  CR_SHARED(float, qs, kMaxHeadSize);
  CR_SHARED(float, sc, kWarpSize);
  const int lane = threadIdx.x, h = blockIdx.x;
  const size_t kv = (size_t)(h / (H / Hkv)) * hs;
  stage_row(qs, q + (size_t)h * hs, hs, lane);
  __syncthreads();
  float acc[NJ], m, l;
  softmax_rows(acc, m, l, qs, sc, kcache + kv, vcache + kv, (size_t)Hkv * hs, len, hs,
               1.f / sqrtf((float)hs), lane);
  store_row(out + (size_t)h * hs, acc, 1.f / l, hs, lane);
}

// dQ: block per (b, h, t), numbered as in the forward. dq_t = sum_{lo <= s <= hi} dS_ts k_s with
// dS_ts = P_ts (dout_t . v_s - D_t) / sqrt(hs), P_ts = exp(q_t . k_s / sqrt(hs) - lse_t).
template <class Tp, int NJ>
__global__ void attention_backward_dq_kernel(Tp* dqkv, const Tp* dout, const Tp* qkv,
                                             const Tp* out, const float* lse, int B, int T, int H,
                                             int Hkv, int hs, const int* kv_range) {
  CR_SHARED(float, qs, kMaxHeadSize);
  CR_SHARED(float, dos, kMaxHeadSize);
  CR_SHARED(float, ds, kWarpSize);
  const int lane = threadIdx.x;
  const long long row = blockIdx.x;
  const int t = (int)(row % T), h = (int)(row / T % H), b = (int)(row / ((long long)T * H));
  const size_t ld = (size_t)(H + 2 * Hkv) * hs;
  const int kvh = h / (H / Hkv);
  const float scale = 1.f / sqrtf((float)hs);
  const Tp* base = qkv + (size_t)b * T * ld;
  const Tp* k0 = base + (size_t)(H + kvh) * hs;
  const Tp* v0 = k0 + (size_t)Hkv * hs;
  const size_t orow = ((size_t)b * T + t) * H * hs + (size_t)h * hs;  // in out / dout
  int lo, hi;
  key_range(kv_range, b, t, T, lo, hi);

  stage_row(qs, base + t * ld + (size_t)h * hs, hs, lane);
  stage_row(dos, dout + orow, hs, lane);
  __syncthreads();
  const float D = dot_staged(dos, out + orow, hs);
  const float L = lse[row];
  float dq[NJ];
  zero(dq);
  for (int s0 = lo; s0 <= hi; s0 += kWarpSize) {
    const int n = imin(kWarpSize, hi + 1 - s0);
    float w = 0.f;
    if (lane < n) {
      const size_t s = (size_t)(s0 + lane);
      const float p = expf(dot_staged(qs, k0 + s * ld, hs) * scale - L);
      w = p * (dot_staged(dos, v0 + s * ld, hs) - D) * scale;
    }
    ds[lane] = w;
    __syncthreads();
    for (int i = 0; i < n; i++) add_row(dq, ds[i], k0 + (size_t)(s0 + i) * ld, hs, lane);
    __syncthreads();
  }
  store_row(dqkv + ((size_t)b * T + t) * ld + (size_t)h * hs, dq, 1.f, hs, lane);
}

// dK, dV: block per (b, kv head, key s), blockIdx.x = (b Hkv + kvh) T + s. Over the group's query
// heads h and the queries t that see s (t >= s when causal): dv_s = sum P_ts dout_t,
// dk_s = sum dS_ts q_t.
template <class Tp, int NJ>
__global__ void attention_backward_dkv_kernel(Tp* dqkv, const Tp* dout, const Tp* qkv,
                                              const Tp* out, const float* lse, int B, int T,
                                              int H, int Hkv, int hs, const int* kv_range) {
  CR_SHARED(float, ks, kMaxHeadSize);
  CR_SHARED(float, vs, kMaxHeadSize);
  CR_SHARED(float, ps, kWarpSize);
  CR_SHARED(float, ds, kWarpSize);
  const int lane = threadIdx.x;
  const long long row = blockIdx.x;
  const int s = (int)(row % T), kvh = (int)(row / T % Hkv), b = (int)(row / ((long long)T * Hkv));
  const size_t ld = (size_t)(H + 2 * Hkv) * hs, C = (size_t)H * hs;
  const int group = H / Hkv;
  const float scale = 1.f / sqrtf((float)hs);
  const Tp* base = qkv + (size_t)b * T * ld;
  const size_t krow = s * ld + (size_t)(H + kvh) * hs;  // k_s in this batch; v_s Hkv hs after
  const size_t vrow = krow + (size_t)Hkv * hs;

  int first, last;  // the queries that see key s: within [first, last]
  query_window(kv_range, b, s, T, lane, first, last);

  stage_row(ks, base + krow, hs, lane);
  stage_row(vs, base + vrow, hs, lane);
  __syncthreads();
  float dk[NJ], dv[NJ];
  zero(dk);
  zero(dv);
  for (int h = kvh * group; h < (kvh + 1) * group; h++) {
    const Tp* q0 = base + (size_t)h * hs;                             // q_t at q0 + t ld
    const Tp* do0 = dout + (size_t)b * T * C + (size_t)h * hs;        // dout_t at do0 + t C
    const Tp* o0 = out + (size_t)b * T * C + (size_t)h * hs;
    const float* L = lse + ((size_t)b * H + h) * T;
    for (int t0 = first; t0 <= last; t0 += kWarpSize) {
      const int n = imin(kWarpSize, last + 1 - t0);
      float p = 0.f, w = 0.f;
      int lo = 0, hi = 0;
      if (lane < n) key_range(kv_range, b, t0 + lane, T, lo, hi);
      if (lane < n && lo <= s && s <= hi) {
        const size_t t = (size_t)(t0 + lane);
        p = expf(dot_staged(ks, q0 + t * ld, hs) * scale - L[t]);
        const float dp = dot_staged(vs, do0 + t * C, hs);       // dout_t . v_s
        const float D = dot_rows(do0 + t * C, o0 + t * C, hs);  // dout_t . out_t
        w = p * (dp - D) * scale;
      }
      ps[lane] = p;
      ds[lane] = w;
      __syncthreads();
      for (int i = 0; i < n; i++) {
        const size_t t = (size_t)(t0 + i);
        add_row(dv, ps[i], do0 + t * C, hs, lane);
        add_row(dk, ds[i], q0 + t * ld, hs, lane);
      }
      __syncthreads();
    }
  }
  Tp* dst = dqkv + (size_t)b * T * ld;
  store_row(dst + krow, dk, 1.f, hs, lane);
  store_row(dst + vrow, dv, 1.f, hs, lane);
}

// Calls f(std::integral_constant<int, NJ>{}) with the fewest channel slots per lane that hold hs.
template <class F>
void dispatch_slots(int hs, F&& f) {
  if (hs <= 32) {
    f(std::integral_constant<int, 1>{});
  } else if (hs <= 64) {
    f(std::integral_constant<int, 2>{});
  } else if (hs <= 128) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, 8>{});
  }
}

// Argument checks that name the op.
inline void check_heads(const char* op, int H, int Hkv, int hs) {
  CR_CHECK(hs >= 1 && hs <= kMaxHeadSize, "{}: head size hs={} must be in [1, {}]", op, hs,
           kMaxHeadSize);
  CR_CHECK(H >= 1 && Hkv >= 1 && H % Hkv == 0,
           "{}: H={} query heads must be a positive multiple of Hkv={}", op, H, Hkv);
}

// One warp per block, one block per output row.
inline dim3 row_grid(long long rows) { return dim3((unsigned)rows); }
inline dim3 warp_block() { return dim3(kWarpSize); }

}  // namespace attention_detail

// out [B,T,H hs], lse [B,H,T] from qkv [B,T,(H + 2 Hkv) hs]; kv_range int32 [B,T,2] or nullptr
// (causal). No workspace.
template <class Tp, class L>
void run_attention_forward(const L& launch, Tp* out, float* lse, const Tp* qkv, int B, int T,
                           int H, int Hkv, int hs, const int* kv_range = nullptr) {
  namespace d = attention_detail;
  d::check_heads("attention_forward", H, Hkv, hs);
  const long long rows = (long long)B * H * T;
  if (rows == 0) return;
  CR_CHECK(rows <= 0x7fffffffLL, "attention_forward: B*H*T={} rows exceed a grid", rows);
  d::dispatch_slots(hs, [&](auto nj) {
    constexpr int NJ = decltype(nj)::value;
    launch(d::row_grid(rows), d::warp_block(), d::attention_forward_kernel<Tp, NJ>, out, lse, qkv,
           B, T, H, Hkv, hs, kv_range);
  });
}

// dqkv [B,T,(H + 2 Hkv) hs] (overwritten) from dout and out [B,T,H hs], qkv, lse [B,H,T] of the
// forward, with the forward's kv_range (nullptr: causal). No workspace.
template <class Tp, class L>
void run_attention_backward(const L& launch, Tp* dqkv, const Tp* dout, const Tp* qkv,
                            const Tp* out, const float* lse, int B, int T, int H, int Hkv, int hs,
                            const int* kv_range = nullptr) {
  namespace d = attention_detail;
  d::check_heads("attention_backward", H, Hkv, hs);
  const long long rows = (long long)B * H * T;
  if (rows == 0) return;
  CR_CHECK(rows <= 0x7fffffffLL, "attention_backward: B*H*T={} rows exceed a grid", rows);
  d::dispatch_slots(hs, [&](auto nj) {
    constexpr int NJ = decltype(nj)::value;
    launch(d::row_grid(rows), d::warp_block(), d::attention_backward_dq_kernel<Tp, NJ>, dqkv,
           dout, qkv, out, lse, B, T, H, Hkv, hs, kv_range);
    launch(d::row_grid((long long)B * Hkv * T), d::warp_block(),
           d::attention_backward_dkv_kernel<Tp, NJ>, dqkv, dout, qkv, out, lse, B, T, H, Hkv, hs,
           kv_range);
  });
}

// out [H hs] for one query q [H hs] against caches [len, Hkv hs] (positions 0..len-1, len >= 1).
template <class Tp, class L>
void run_attention_decode(const L& launch, Tp* out, const Tp* q, const Tp* kcache,
                          const Tp* vcache, int len, int H, int Hkv, int hs) {
  namespace d = attention_detail;
  d::check_heads("attention_decode", H, Hkv, hs);
  CR_CHECK(len >= 1, "attention_decode: cache length len={} must be at least 1", len);
  d::dispatch_slots(hs, [&](auto nj) {
    constexpr int NJ = decltype(nj)::value;
    launch(d::row_grid(H), d::warp_block(), d::attention_decode_kernel<Tp, NJ>, out, q, kcache,
           vcache, len, H, Hkv, hs);
  });
}

}  // namespace cr::cuda

#undef CR_ATTN_UNROLL
