// A single-threaded GEMM for the small blocks inside attention (64 x 256 x 64): called by many
// threads at once, where a BLAS library's per-call overhead and shared buffers cost more than
// the arithmetic (OpenBLAS from inside an OpenMP region: 6x slower than this on 2 threads).
//   C[M,N] = alpha * A[M,K] B[K,N] + (accumulate ? C : 0),   row-major, explicit strides.
// Transposed operands are packed first (pack_transpose) so one kernel serves every form.
// Compiled per ISA (CR_CLONES); register-blocked 4 rows x 64 columns.
#pragma once

namespace cr::cpu {

void block_gemm(int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                int ldb, float* C, int ldc, bool accumulate);
// dst[c, r] = src[r, c] for an R x Cc block (dst row stride R).
void pack_transpose(float* dst, const float* src, int R, int Cc, int ld_src);

}  // namespace cr::cpu
