// The GEMM engine, chosen by measurement (bench/gemm, 2 cores of this Zen 5 machine, GFLOP/s
// over the GEMMs of one GPT-2 124M step at B=8, T=256):
//   oneDNN dnnl_sgemm                         457   (its own CPU dispatch: AVX-512 here)
//   OpenBLAS, OPENBLAS_CORETYPE unset         430   (AVX-512 kernel; 314 in another pass)
//   BLIS, AVX-512 (skx) kernels forced        415   (auto-detection picks 'generic': 75)
//   OpenBLAS, OPENBLAS_CORETYPE=Haswell       232   (the environment our CI runs in)
// oneDNN wins and ignores OPENBLAS_CORETYPE, so users get the AVX-512 kernel whatever their
// environment forces on OpenBLAS. It threads with OpenMP (libgomp, the runtime our loops use):
// one pool, no oversubscription. Without libdnnl at build time, OpenBLAS serves instead.
#include "core/backend/cpu/gemm.h"

#if defined(CR_HAVE_DNNL)
#include <dnnl.h>

#include "core/common/error.h"
#else
#include <cblas.h>
#endif

namespace cr::cpu {

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
#if defined(CR_HAVE_DNNL)
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A,
                                      lda, B, ldb, beta, C, ldc);
  CR_CHECK(st == dnnl_success, "dnnl_sgemm({}x{}x{}) failed with status {}", M, N, K, (int)st);
#else
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

const char* gemm_engine() {
#if defined(CR_HAVE_DNNL)
  return "oneDNN";
#else
  return "OpenBLAS";
#endif
}

}  // namespace cr::cpu
