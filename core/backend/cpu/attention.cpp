// Causal multi-head self-attention, flash-style: the [T,T] probabilities never exist.
// With a key range per query (document masks, prefix-LM: backend.h) the same loops visit only
// the key blocks some query of the block sees, and each row only its own columns.
//
// Forward, per (batch, head) and per block of kQ queries: walk the keys in blocks of kK with an
// online softmax -- keep each row's running max m and sum l, rescale the output accumulator by
// exp(m_old - m_new) when the max grows -- so memory is O(kQ x kK) per thread whatever T is.
// Every product is a block GEMM on the calling thread (S = Q K^T, O += P V; block_gemm.h, with K^T
// packed once per head). The log-sum-exp of each
// row, lse = m + log l, is all backward needs to rebuild P = exp(S - lse) block by block:
//   dV += P^T dO,  dP = dO V^T,  dS = P * (dP - D) / sqrt(hs)  with D = rowsum(dO * O),
//   dQ += dS K,    dK += dS^T Q.
// One thread owns one (batch, head) at a time, so the sums run in a fixed order: deterministic.
// The simple version that materialises the probabilities is cpu::ref::attention_* (the oracle).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/backend/cpu/block_gemm.h"
#include "core/backend/cpu/ops.h"
#include "core/backend/cpu/vec_math.h"

namespace cr::cpu {

namespace {

constexpr int kQ = 64;   // query rows per block
constexpr int kK = 256;  // keys per online-softmax step

// The keys query t of sequence b attends to, [lo, hi] inclusive: causal (0..t) without a range.
struct KeyRange {
  const int32_t* range;  // [B,T,2] or null
  int T;
  int lo(int b, int t) const { return range ? range[((size_t)b * T + t) * 2] : 0; }
  int hi(int b, int t) const { return range ? range[((size_t)b * T + t) * 2 + 1] : t; }
  // The keys any query of rows [i0, i0 + rows) sees: [first, end).
  void block(int b, int i0, int rows, int* first, int* end) const {
    if (!range) {
      *first = 0, *end = i0 + rows;
      return;
    }
    *first = T, *end = 0;
    for (int r = 0; r < rows; r++) {
      *first = std::min(*first, lo(b, i0 + r));
      *end = std::max(*end, hi(b, i0 + r) + 1);
    }
  }
  // Row t's visible columns of a score block whose keys start at j0: [c0, c1).
  void cols(int b, int t, int j0, int cols, int* c0, int* c1) const {
    *c0 = std::clamp(lo(b, t) - j0, 0, cols);
    *c1 = std::clamp(hi(b, t) - j0 + 1, 0, cols);
  }
};

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H, int Hkv,
                       int hs, const int32_t* kv_range) {
  const int C = H * hs, ld = (H + 2 * Hkv) * hs, group = H / Hkv;
  const KeyRange keys{kv_range, T};
  const float scale = 1.f / std::sqrt((float)hs);
#pragma omp parallel
  {
    std::vector<float> S((size_t)kQ * kK), O((size_t)kQ * hs), m(kQ), l(kQ), Kt((size_t)hs * T);
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++) {
        const float* q = qkv + (size_t)b * T * ld + h * hs;
        const float* k = qkv + (size_t)b * T * ld + (H + h / group) * hs;  // its kv head
        const float* v = k + Hkv * hs;
        pack_transpose(Kt.data(), k, T, hs, ld);  // [hs, T]
        for (int i0 = 0; i0 < T; i0 += kQ) {
          const int rows = std::min(kQ, T - i0);
          int kv_first, kv_end;
          keys.block(b, i0, rows, &kv_first, &kv_end);
          std::fill(m.begin(), m.end(), -INFINITY);
          std::fill(l.begin(), l.end(), 0.f);
          std::fill(O.begin(), O.end(), 0.f);
          for (int j0 = kv_first; j0 < kv_end; j0 += kK) {
            const int cols = std::min(kK, kv_end - j0);
            block_gemm(rows, cols, hs, scale, q + (size_t)i0 * ld, ld, Kt.data() + j0, T, S.data(),
                       cols, false);
            for (int r = 0; r < rows; r++) {
              float* s = S.data() + (size_t)r * cols;
              int c0, c1;
              keys.cols(b, i0 + r, j0, cols, &c0, &c1);
              float mx = m[r];
              for (int c = c0; c < c1; c++) mx = std::max(mx, s[c]);
              float sum = 0.f;
#pragma omp simd reduction(+ : sum)
              for (int c = c0; c < c1; c++) {
                s[c] = exp_approx(s[c] - mx);
                sum += s[c];
              }
              std::fill(s, s + c0, 0.f);
              std::fill(s + std::max(c0, c1), s + cols, 0.f);
              if (c1 <= c0) continue;
              const float corr = m[r] == -INFINITY ? 0.f : exp_approx(m[r] - mx);
              if (corr != 1.f)
                for (int d = 0; d < hs; d++) O[(size_t)r * hs + d] *= corr;
              l[r] = l[r] * corr + sum;
              m[r] = mx;
            }
            block_gemm(rows, hs, cols, 1.f, S.data(), cols, v + (size_t)j0 * ld, ld, O.data(), hs,
                       true);
          }
          for (int r = 0; r < rows; r++) {
            const float inv = 1.f / l[r];
            float* o = out + ((size_t)b * T + i0 + r) * C + h * hs;
            for (int d = 0; d < hs; d++) o[d] = O[(size_t)r * hs + d] * inv;
            lse[((size_t)b * H + h) * T + i0 + r] = m[r] + std::log(l[r]);
          }
        }
      }
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, int B, int T, int H, int Hkv, int hs,
                        const int32_t* kv_range) {
  const int C = H * hs, ld = (H + 2 * Hkv) * hs, group = H / Hkv;
  const KeyRange keys{kv_range, T};
  const float scale = 1.f / std::sqrt((float)hs);
#pragma omp parallel
  {
    std::vector<float> P((size_t)kQ * kK), dP((size_t)kQ * kK), D(T), dQ((size_t)kQ * hs);
    std::vector<float> dK((size_t)T * hs), dV((size_t)T * hs), Kt((size_t)hs * T), Vt((size_t)hs * T);
    std::vector<float> Pt((size_t)kK * kQ);
// One thread owns a (batch, kv head): the query heads of its group add into the same dK, dV in
// a fixed order.
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
      for (int kvh = 0; kvh < Hkv; kvh++) {
        const float* k = qkv + (size_t)b * T * ld + (H + kvh) * hs;
        const float* v = k + Hkv * hs;
        pack_transpose(Kt.data(), k, T, hs, ld);
        pack_transpose(Vt.data(), v, T, hs, ld);
        std::fill(dK.begin(), dK.end(), 0.f);
        std::fill(dV.begin(), dV.end(), 0.f);
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        const float* q = qkv + (size_t)b * T * ld + h * hs;
        const float* dO = dout + (size_t)b * T * C + h * hs;
        const float* row_lse = lse + ((size_t)b * H + h) * T;
        for (int t = 0; t < T; t++) {  // D = rowsum(dO * O)
          const float* o = out + ((size_t)b * T + t) * C + h * hs;
          float d = 0.f;
          for (int i = 0; i < hs; i++) d += dO[(size_t)t * C + i] * o[i];
          D[t] = d;
        }
        for (int i0 = 0; i0 < T; i0 += kQ) {
          const int rows = std::min(kQ, T - i0);
          int kv_first, kv_end;
          keys.block(b, i0, rows, &kv_first, &kv_end);
          std::fill(dQ.begin(), dQ.end(), 0.f);
          for (int j0 = kv_first; j0 < kv_end; j0 += kK) {
            const int cols = std::min(kK, kv_end - j0);
            block_gemm(rows, cols, hs, scale, q + (size_t)i0 * ld, ld, Kt.data() + j0, T, P.data(),
                       cols, false);
            for (int r = 0; r < rows; r++) {
              float* p = P.data() + (size_t)r * cols;
              int c0, c1;
              keys.cols(b, i0 + r, j0, cols, &c0, &c1);
              const float shift = row_lse[i0 + r];
#pragma omp simd
              for (int c = c0; c < c1; c++) p[c] = exp_approx(p[c] - shift);
              std::fill(p, p + c0, 0.f);
              std::fill(p + std::max(c0, c1), p + cols, 0.f);
            }
            pack_transpose(Pt.data(), P.data(), rows, cols, cols);  // [cols, rows]
            block_gemm(cols, hs, rows, 1.f, Pt.data(), rows, dO + (size_t)i0 * C, C,
                       dV.data() + (size_t)j0 * hs, hs, true);
            block_gemm(rows, cols, hs, 1.f, dO + (size_t)i0 * C, C, Vt.data() + j0, T, dP.data(),
                       cols, false);
            for (int r = 0; r < rows; r++) {  // dS, in place of dP
              float* ds = dP.data() + (size_t)r * cols;
              const float* p = P.data() + (size_t)r * cols;
              const float d = D[i0 + r];
#pragma omp simd
              for (int c = 0; c < cols; c++) ds[c] = p[c] * (ds[c] - d) * scale;
            }
            block_gemm(rows, hs, cols, 1.f, dP.data(), cols, k + (size_t)j0 * ld, ld, dQ.data(), hs,
                       true);
            pack_transpose(Pt.data(), dP.data(), rows, cols, cols);  // dS^T
            block_gemm(cols, hs, rows, 1.f, Pt.data(), rows, q + (size_t)i0 * ld, ld,
                       dK.data() + (size_t)j0 * hs, hs, true);
          }
          float* dq = dqkv + ((size_t)b * T + i0) * ld + h * hs;
          for (int r = 0; r < rows; r++)
            std::memcpy(dq + (size_t)r * ld, dQ.data() + (size_t)r * hs, hs * sizeof(float));
        }
        }
        float* dk = dqkv + (size_t)b * T * ld + (H + kvh) * hs;
        for (int t = 0; t < T; t++) {
          std::memcpy(dk + (size_t)t * ld, dK.data() + (size_t)t * hs, hs * sizeof(float));
          std::memcpy(dk + (size_t)t * ld + Hkv * hs, dV.data() + (size_t)t * hs, hs * sizeof(float));
        }
      }
  }
}

}  // namespace cr::cpu

namespace cr::cpu {

void attention_decode(float* out, const float* q, const float* kcache, const float* vcache,
                      int len, int H, int Hkv, int hs) {
  const int ldkv = Hkv * hs, group = H / Hkv;
  const float scale = 1.f / std::sqrt((float)hs);
  std::vector<float> p(len);
  for (int h = 0; h < H; h++) {
    float mx = -INFINITY;
    for (int s = 0; s < len; s++) {
      const float* k = kcache + (size_t)s * ldkv + (h / group) * hs;
      const float* qh = q + h * hs;
      float dot = 0.f;
      // Vectorised (a fixed lane-wise order: the same bits on every call of this binary).
#pragma omp simd reduction(+ : dot)
      for (int i = 0; i < hs; i++) dot += qh[i] * k[i];
      p[s] = dot * scale;
      mx = std::max(mx, p[s]);
    }
    float sum = 0.f;
    for (int s = 0; s < len; s++) {
      p[s] = std::exp(p[s] - mx);
      sum += p[s];
    }
    float* o = out + h * hs;
    for (int i = 0; i < hs; i++) o[i] = 0.f;
    for (int s = 0; s < len; s++) {
      const float* v = vcache + (size_t)s * ldkv + (h / group) * hs;
      const float w = p[s] / sum;
#pragma omp simd
      for (int i = 0; i < hs; i++) o[i] += w * v[i];
    }
  }
}

}  // namespace cr::cpu
