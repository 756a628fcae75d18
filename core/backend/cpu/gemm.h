// The one GEMM every CPU op goes through (row-major, fp32):
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C,   op(X) = X or X^T.
// It uses every OpenMP thread; call it outside parallel regions (the small per-thread products
// inside attention use block_gemm.h instead). Which library serves it is decided in gemm.cpp,
// by measurement (see bench/gemm).
#pragma once

namespace cr::cpu {

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc);

// The engine's name and the ISA it dispatched to, for logs and benchmarks.
const char* gemm_engine();

}  // namespace cr::cpu
