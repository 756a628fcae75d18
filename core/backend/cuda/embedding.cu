// CudaBackend's embedding ops: argument checks, then the embedding.cuh kernels on the backend's
// stream. T (f32 or bf16) is read off wte (forward) or dout (backward); tokens are i32; dwte and
// dwpe are f32 and accumulated. wpe/dwpe may be empty. Vocabulary-parallel: wte holds rows
// [vocab_start, vocab_start + vocab_count) (vocab_count INT32_MAX: the whole, unknown-sized table).
#include <climits>

#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/embedding.cuh"
#include "core/backend/cuda/launch.cuh"

namespace cr::cuda {

namespace {

// The embedding rows a (vocabulary-parallel) table must hold, as the CPU backend counts them.
size_t table_elems(int vocab_count, int C) {
  return z(vocab_count == INT32_MAX ? 1 : (vocab_count > 1 ? vocab_count : 1), C);
}

void check_sizes(const char* op, int B, int T, int C, int vocab_count) {
  CR_CHECK(B >= 0 && T >= 0 && C > 0 && vocab_count >= 0 && (long long)B * T <= INT_MAX,
           "{}: B {} T {} C {} vocab_count {}", op, B, T, C, vocab_count);
}

}  // namespace

void CudaBackend::embedding_forward(TensorView out, TensorView tokens, TensorView wte,
                                    TensorView wpe, int B, int T, int C, int vocab_start,
                                    int vocab_count) {
  const char* op = "embedding_forward";
  check_sizes(op, B, T, C, vocab_count);
  const DType t = compute_dtype(wte, op, "wte");
  dispatch_float(t, [&](auto tag) {
    using S = decltype(tag);
    run_embedding_forward(CudaLaunch{stream(), op}, cuda_ptr<S>(out, t, z(B * T, C), op, "out"),
                          cuda_ptr<const int>(tokens, DType::I32, z(B, T), op, "tokens"),
                          cuda_ptr<const S>(wte, t, table_elems(vocab_count, C), op, "wte"),
                          cuda_ptr<const S>(wpe, t, wpe.empty() ? 0 : z(T, C), op, "wpe"), B, T,
                          C, vocab_start, vocab_count);
  });
}

void CudaBackend::embedding_backward(TensorView dwte, TensorView dwpe, TensorView dout,
                                     TensorView tokens, int B, int T, int C, int vocab_start,
                                     int vocab_count) {
  const char* op = "embedding_backward";
  check_sizes(op, B, T, C, vocab_count);
  const DType t = compute_dtype(dout, op, "dout");
  dispatch_float(t, [&](auto tag) {
    using S = decltype(tag);
    float* dw = cuda_ptr<float>(dwte, DType::F32, table_elems(vocab_count, C), op, "dwte");
    float* dp = cuda_ptr<float>(dwpe, DType::F32, dwpe.empty() ? 0 : z(T, C), op, "dwpe");
    const S* d = cuda_ptr<const S>(dout, t, z(B * T, C), op, "dout");
    const int* tok = cuda_ptr<const int>(tokens, DType::I32, z(B, T), op, "tokens");
    if (B * T == 0) return;
    int* chain = static_cast<int*>(scratch(embedding_backward_scratch_ints(B, T) * sizeof(int)));
    run_embedding_backward(CudaLaunch{stream(), op}, dw, dp, chain, d, tok, B, T, C, vocab_start,
                           vocab_count);
  });
}

}  // namespace cr::cuda
