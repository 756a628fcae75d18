// Linear layers on the GPU through cuBLASLt: matmul_forward (bias epilogue), matmul_gelu_forward
// (GELU_AUX_BIAS epilogue: pre and gelu(pre) in one pass) and matmul_backward (two GEMMs plus our
// deterministic bias-gradient kernel, bias_backward.cuh).
//
// Layout. Our matrices are row-major; cuBLASLt's are column-major. A row-major X[r, c] with rows
// L elements apart is, read column-major, X^T: c x r with leading dimension L. So
//   forward  out[N,OC] = inp[N,C] weight[OC,C]^T   is  out^T (OC x N, ld ldo)
//            = op(A) B with A = weight seen as C x OC (ld C) transposed, B = inp seen as C x N;
//   dinp[N,C] = dout[N,OC] weight[OC,C]            is  dinp^T (C x N, ld C)
//            = A B with A = weight seen as C x OC, B = dout seen as OC x N (ld ldd);
//   dweight[OC,C] += dout^T inp                    is  dweight^T (C x OC, ld C)
//            = A op(B) with A = inp seen as C x N, B = dout seen as OC x N (ld ldd) transposed.
// The bias of the forward is then a vector over the rows of D (OC), which is what cuBLASLt's
// bias epilogue adds.
//
// Precision. f32 GEMMs compute in plain fp32 (CUBLAS_COMPUTE_32F, no TF32): the f32 path exists
// for parity with the CPU. bf16 GEMMs read bf16 and accumulate in fp32; dweight is fp32 (C and D
// fp32, beta 1) so gradients accumulate at full precision across micro-batches.
//
// cuBLASLt's GELU epilogue is the tanh approximation, as ours (cpu/gelu.cpp): NVIDIA's own
// cuBLASLt epilogue sample lists gelu(1) = 0.841194 (tanh form; the erf form gives 0.841345),
// and PyTorch's _addmm_activation(use_gelu=True) uses this epilogue for gelu(approximate="tanh").
// tests/gpu checks it against the CPU op.
//
// Plans (descriptors, layouts and the heuristic's algorithm) are cached by everything the
// heuristic reads: shapes, leading dimensions, types, epilogue, beta, pointer alignments. A
// cached plan is therefore reused only where the heuristic would have picked it, and a training
// step, which repeats its shapes, runs the same algorithms every step (bit-reproducible).
#include <cublasLt.h>

#include <array>
#include <map>
#include <memory>

#include "core/backend/cuda/bias_backward.cuh"
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/cuda_check.h"
#include "core/backend/cuda/launch.cuh"

namespace cr::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// One GEMM as cuBLASLt sees it: D (m x n, ld ldd) = alpha op(A) op(B) + beta D, column-major,
// then the epilogue (bias over the m rows of D; GELU with its input saved in aux, ld aux_ld).
struct GemmArgs {
  cudaDataType_t ab_type, d_type;
  bool trans_a, trans_b;
  int64_t m, n, k;
  const void* a;
  int64_t lda;
  const void* b;
  int64_t ldb;
  void* d;
  int64_t ldd;
  float beta = 0.f;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  void* aux = nullptr;
  int64_t aux_ld = 0;
};

cudaDataType_t cuda_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// The largest power of two (up to 256, cuBLASLt's default assumption) dividing the address.
int64_t alignment(const void* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  if (u == 0) return 256;
  int64_t a = 1;
  while (a < 256 && (u & (uintptr_t)a) == 0) a <<= 1;
  return a;
}

using PlanKey = std::array<int64_t, 18>;

struct PrefDeleter {
  void operator()(cublasLtMatmulPreference_t p) const { (void)cublasLtMatmulPreferenceDestroy(p); }
};

PlanKey plan_key(const GemmArgs& g) {
  return {g.ab_type,          g.d_type,         g.trans_a,         g.trans_b, g.m, g.n, g.k,
          g.lda,              g.ldb,            g.ldd,             g.beta != 0.f, g.epilogue,
          g.aux_ld,           alignment(g.a),   alignment(g.b),    alignment(g.d),
          alignment(g.bias),  alignment(g.aux)};
}

}  // namespace

struct CudaBackend::Blas {
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool supported = false;  // the heuristic found an algorithm
  };

  CudaBackend* backend;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<PlanKey, Plan> plans;

  explicit Blas(CudaBackend& be) : backend(&be) {
    CR_CUBLAS_CHECK(cublasLtCreate(&handle));
    try {
      workspace = be.allocator().allocate(kWorkspaceBytes);
    } catch (...) {
      cublasLtDestroy(handle);
      throw;
    }
  }
  ~Blas() {  // never throws: destroy errors are ignored
    for (auto& [key, p] : plans) destroy(p);
    if (workspace) backend->allocator().deallocate(workspace, kWorkspaceBytes);
    if (handle) (void)cublasLtDestroy(handle);
  }
  static void destroy(Plan& p) noexcept {
    if (p.a) (void)cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) (void)cublasLtMatrixLayoutDestroy(p.b);
    if (p.d) (void)cublasLtMatrixLayoutDestroy(p.d);
    if (p.desc) (void)cublasLtMatmulDescDestroy(p.desc);
  }

  // The cached plan for g (built and asked of the heuristic on first use).
  const Plan& plan(const GemmArgs& g) {
    const PlanKey key = plan_key(g);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    Plan p;
    try {
      build(p, g);
    } catch (...) {
      destroy(p);
      throw;
    }
    return plans.emplace(key, p).first->second;
  }

  // The pointers of this call (the plan's heuristic assumed their alignment class, see key).
  void set_pointers(const Plan& p, const GemmArgs& g) {
    if (g.bias)
      CR_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                     &g.bias, sizeof(g.bias)));
    if (g.aux)
      CR_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g.aux, sizeof(g.aux)));
  }

 private:
  void build(Plan& p, const GemmArgs& g) {
    CR_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    CR_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta,
                                                   sizeof(ta)));
    CR_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb,
                                                   sizeof(tb)));
    CR_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                   &g.epilogue, sizeof(g.epilogue)));
    if (g.aux)
      CR_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                                     &g.aux_ld, sizeof(g.aux_ld)));
    set_pointers(p, g);
    // Stored shapes: op(A) is m x k, op(B) is k x n.
    CR_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, g.ab_type, g.trans_a ? g.k : g.m,
                                               g.trans_a ? g.m : g.k, g.lda));
    CR_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, g.ab_type, g.trans_b ? g.n : g.k,
                                               g.trans_b ? g.k : g.n, g.ldb));
    CR_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, g.d_type, g.m, g.n, g.ldd));

    // The preference: workspace limit and the alignments of this call's pointers.
    cublasLtMatmulPreference_t pref = nullptr;
    CR_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PrefDeleter> pref_guard(pref);
    const size_t ws = kWorkspaceBytes;
    CR_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    const uint32_t al_a = (uint32_t)alignment(g.a), al_b = (uint32_t)alignment(g.b),
                   al_d = (uint32_t)alignment(g.d);
    CR_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
    CR_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
    CR_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d)));
    CR_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d)));

    // C is D (in place), so its layout is D's.
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.d, p.d,
                                                             pref, 1, &result, &found);
    // NOT_SUPPORTED: no algorithm for this combination; the caller decides whether that is an
    // error. A GELU epilogue may also be refused as invalid (a type or shape it lacks): the
    // caller then runs the unfused path.
    const bool gelu = g.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
                      g.epilogue == CUBLASLT_EPILOGUE_GELU_AUX;
    if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED &&
        !(gelu && st == CUBLAS_STATUS_INVALID_VALUE))
      throw_library_error("cuBLASLt", (long)st, cublasLtGetStatusString(st),
                          "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
    p.supported = st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (p.supported) p.algo = result.algo;
  }
};

void CudaBackend::BlasDeleter::operator()(Blas* b) const { delete b; }

CudaBackend::Blas& CudaBackend::blas() {
  if (!blas_) blas_.reset(new Blas(*this));
  return *blas_;
}

namespace {

// Runs g; false (nothing issued) where cuBLASLt has no algorithm for it and `may_decline`,
// else such a GEMM throws naming the op and its shape.
bool gemm(CudaBackend& be, const GemmArgs& g, const char* op, bool may_decline = false) {
  CudaBackend::Blas& blas = be.blas();
  const CudaBackend::Blas::Plan& p = blas.plan(g);
  if (!p.supported) {
    if (may_decline) return false;
    CR_THROW("{}: cuBLASLt has no algorithm for m={} n={} k={} lda={} ldb={} ldd={} ({} -> {}, "
             "epilogue {}) [{}]",
             op, g.m, g.n, g.k, g.lda, g.ldb, g.ldd, g.ab_type == CUDA_R_16BF ? "bf16" : "f32",
             g.d_type == CUDA_R_16BF ? "bf16" : "f32", (int)g.epilogue, library_versions());
  }
  blas.set_pointers(p, g);
  const float alpha = 1.f, beta = g.beta;
  CR_CUBLAS_CHECK(cublasLtMatmul(blas.handle, p.desc, &alpha, g.a, p.a, g.b, p.b, &beta, g.d,
                                 p.d, g.d, p.d, &p.algo, blas.workspace, kWorkspaceBytes,
                                 be.stream()));
  return true;
}

// Elements a [rows, ld-apart] view must hold: the last row needs only its first `cols`.
size_t strided(int rows, int cols, int ld) { return rows > 0 ? z(rows - 1, ld) + cols : 0; }

void check_dims(const char* op, int N, int C, int OC) {
  CR_CHECK(N >= 0 && C > 0 && OC > 0, "{}: N {} C {} OC {} (N >= 0, C and OC > 0)", op, N, C, OC);
}

// The forward GEMM out^T = weight^T' inp^T (see the file comment), with its epilogue.
GemmArgs forward_args(DType t, void* out, int ldo, const void* inp, const void* weight,
                      const void* bias, int N, int C, int OC) {
  GemmArgs g{};
  g.ab_type = g.d_type = cuda_type(t);
  g.trans_a = true;
  g.trans_b = false;
  g.m = OC, g.n = N, g.k = C;
  g.a = weight, g.lda = C;
  g.b = inp, g.ldb = C;
  g.d = out, g.ldd = ldo;
  g.bias = bias;
  g.epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  return g;
}

}  // namespace

void CudaBackend::matmul_forward(TensorView out, TensorView inp, TensorView weight,
                                 TensorView bias, int N, int C, int OC, int ldo) {
  const char* op = "matmul_forward";
  check_dims(op, N, C, OC);
  if (ldo <= 0) ldo = OC;
  CR_CHECK(ldo >= OC, "{}: ldo {} < OC {}", op, ldo, OC);
  const DType t = compute_dtype(inp, op, "inp");
  void* o = cuda_arg(out, t, strided(N, OC, ldo), op, "out");
  const void* x = cuda_arg(inp, t, z(N, C), op, "inp");
  const void* w = cuda_arg(weight, t, z(OC, C), op, "weight");
  const void* b = cuda_arg(bias, t, bias.empty() ? 0 : OC, op, "bias");
  if (N == 0) return;
  gemm(*this, forward_args(t, o, ldo, x, w, b, N, C, OC), op);
}

void CudaBackend::matmul_gelu_forward(TensorView out, TensorView pre, TensorView inp,
                                      TensorView weight, TensorView bias, int N, int C, int OC) {
  const char* op = "matmul_gelu_forward";
  check_dims(op, N, C, OC);
  const DType t = compute_dtype(inp, op, "inp");
  void* o = cuda_arg(out, t, z(N, OC), op, "out");
  void* p = cuda_arg(pre, t, z(N, OC), op, "pre");
  const void* x = cuda_arg(inp, t, z(N, C), op, "inp");
  const void* w = cuda_arg(weight, t, z(OC, C), op, "weight");
  const void* b = cuda_arg(bias, t, bias.empty() ? 0 : OC, op, "bias");
  if (N == 0) return;
  // The GELU input matrix (pre, rows OC apart) needs a leading dimension divisible by 8.
  if (OC % 8 == 0) {
    GemmArgs g = forward_args(t, o, OC, x, w, b, N, C, OC);
    g.epilogue = b ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    g.aux = p;
    g.aux_ld = OC;
    if (gemm(*this, g, op, /*may_decline=*/true)) return;
  }
  // No fused algorithm for this type or shape: the GEMM, then our GELU kernel.
  Backend::matmul_gelu_forward(out, pre, inp, weight, bias, N, C, OC);
}

void CudaBackend::matmul_backward(TensorView dinp, TensorView dweight, TensorView dbias,
                                  TensorView dout, TensorView inp, TensorView weight, int N,
                                  int C, int OC, int ldd, bool accumulate_dinp) {
  const char* op = "matmul_backward";
  check_dims(op, N, C, OC);
  if (ldd <= 0) ldd = OC;
  CR_CHECK(ldd >= OC, "{}: ldd {} < OC {}", op, ldd, OC);
  const DType t = compute_dtype(dout, op, "dout");
  void* di = cuda_arg(dinp, t, dinp.empty() ? 0 : z(N, C), op, "dinp");
  float* dw = cuda_ptr<float>(dweight, DType::F32, z(OC, C), op, "dweight");
  float* db = cuda_ptr<float>(dbias, DType::F32, dbias.empty() ? 0 : OC, op, "dbias");
  const void* dy = cuda_arg(dout, t, strided(N, OC, ldd), op, "dout");
  const void* x = cuda_arg(inp, t, z(N, C), op, "inp");
  const void* w = cuda_arg(weight, t, z(OC, C), op, "weight");
  if (N == 0) return;

  if (di) {  // dinp^T (C x N) = weight^T (C x OC) dout^T (OC x N)
    GemmArgs g{};
    g.ab_type = g.d_type = cuda_type(t);
    g.m = C, g.n = N, g.k = OC;
    g.a = w, g.lda = C;
    g.b = dy, g.ldb = ldd;
    g.d = di, g.ldd = C;
    g.beta = accumulate_dinp ? 1.f : 0.f;
    gemm(*this, g, op);
  }
  {  // dweight^T (C x OC, f32) += inp^T (C x N) (dout^T)^T (N x OC)
    GemmArgs g{};
    g.ab_type = cuda_type(t);
    g.d_type = CUDA_R_32F;
    g.trans_b = true;
    g.m = C, g.n = OC, g.k = N;
    g.a = x, g.lda = C;
    g.b = dy, g.ldb = ldd;
    g.d = dw, g.ldd = C;
    g.beta = 1.f;
    gemm(*this, g, op);
  }
  if (db) {
    const CudaLaunch launch{stream(), op};
    dispatch_float(t, [&](auto tag) {
      using T = decltype(tag);
      run_bias_backward(launch, db, static_cast<const T*>(dy), N, OC, ldd);
    });
  }
}

}  // namespace cr::cuda
