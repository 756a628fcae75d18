#include "core/backend/cpu/block_gemm.h"

#include <algorithm>
#include <cmath>

#include "core/backend/cpu/parallel.h"

namespace cr::cpu {

namespace {

// R rows x NB columns of C, accumulators in registers (R x NB / 16 AVX-512 vectors).
template <int R, int NB>
[[gnu::always_inline]] inline void tile(int K, float alpha, const float* A, int lda, const float* B, int ldb, float* C,
                 int ldc, bool accumulate) {
  float acc[R][NB] = {};
  for (int k = 0; k < K; k++) {
    const float* b = B + (size_t)k * ldb;
    for (int r = 0; r < R; r++) {
      const float a = A[(size_t)r * lda + k];
      for (int j = 0; j < NB; j++) acc[r][j] = std::fma(a, b[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; r++) {
    float* c = C + (size_t)r * ldc;
    if (accumulate)
      for (int j = 0; j < NB; j++) c[j] += alpha * acc[r][j];
    else
      for (int j = 0; j < NB; j++) c[j] = alpha * acc[r][j];
  }
}

// Any R x n block (n < 16 or ragged edges): plain loops.
[[gnu::always_inline]] inline void edge(int R, int n, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                 float* C, int ldc, bool accumulate) {
  for (int r = 0; r < R; r++)
    for (int j = 0; j < n; j++) {
      float s = 0.f;
      for (int k = 0; k < K; k++) s = std::fma(A[(size_t)r * lda + k], B[(size_t)k * ldb + j], s);
      float* c = C + (size_t)r * ldc + j;
      *c = accumulate ? *c + alpha * s : alpha * s;
    }
}

template <int R>
[[gnu::always_inline]] inline void row_block(int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                      float* C, int ldc, bool accumulate) {
  int j = 0;
  for (; j + 64 <= N; j += 64) tile<R, 64>(K, alpha, A, lda, B + j, ldb, C + j, ldc, accumulate);
  for (; j + 16 <= N; j += 16) tile<R, 16>(K, alpha, A, lda, B + j, ldb, C + j, ldc, accumulate);
  if (j < N) edge(R, N - j, K, alpha, A, lda, B + j, ldb, C + j, ldc, accumulate);
}

}  // namespace

CR_CLONES void block_gemm(int M, int N, int K, float alpha, const float* A, int lda,
                          const float* B, int ldb, float* C, int ldc, bool accumulate) {
  int i = 0;
  for (; i + 4 <= M; i += 4)
    row_block<4>(N, K, alpha, A + (size_t)i * lda, lda, B, ldb, C + (size_t)i * ldc, ldc, accumulate);
  for (; i < M; i++)
    row_block<1>(N, K, alpha, A + (size_t)i * lda, lda, B, ldb, C + (size_t)i * ldc, ldc, accumulate);
}

void pack_transpose(float* dst, const float* src, int R, int Cc, int ld_src) {
  for (int r = 0; r < R; r++)
    for (int c = 0; c < Cc; c++) dst[(size_t)c * R + r] = src[(size_t)r * ld_src + c];
}

}  // namespace cr::cpu
