// Kernel parity on a GPU: every op of the Backend table (core/backend/backend.h) run on
// cr::cuda_backend(0) against cr::cpu_backend(), the oracle, on fresh random inputs and ragged
// shapes (sizes that are not multiples of a block or a warp), in f32 and in bf16.
//   - GPU outputs are poisoned first (NaN bytes copied in from the host), so an element a kernel
//     forgets to write shows up as NaN. Accumulated outputs (dweight, dbias, dwte, dwpe, the
//     norms' dinp, matmul's dinp with accumulate_dinp) start from the same random values on both.
//   - bf16: the CPU computes in f32 on the bf16-rounded inputs (core/tensor/bf16.h); the GPU
//     reads and writes bf16 storage (f32 where the dtype rules of backend.h say so). Outputs are
//     compared after converting to f32.
//   - Attention runs with cuDNN's SDPA and with our own kernel (CudaBackend::set_attention_impl),
//     each against the CPU, and cuDNN against ours; causal, GQA (H=4, Hkv=2) and MHA.
// Each op prints one line `OPERR op=<name> dtype=<f32|bf16> max_abs=<a> max_rel=<r> tol=<t>
// worst=<output>` (device_check.sh tabulates them).
// Error measure: max_rel = max|gpu - cpu| / max|cpu| over one output tensor (relative to the
// tensor's largest entry, like tests/dist/compare_runs.py), the worst output of the op reported.
// Exit 77 (skipped) when this process sees no usable GPU; `test_gpu_ops --probe` only answers
// that question (0: GPU usable, 77: not), for the scripts of tests/gpu.
// Seed: fresh each run (printed); CR_GPU_TEST_SEED=<n> repeats one.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/tensor/bf16.h"
#ifdef CR_GPU_TEST_HAVE_CUDA
#include "core/backend/cuda/cuda_backend.h"
#endif

namespace cr {
namespace {

// ---- the tolerance table (max_rel, relative to the output's largest entry) ------------------
// f32 ~1e-5: the GPU sums in other orders than the CPU (tree reductions, warp shuffles), each
// rounding at fp32's 6e-8; 1e-5 leaves room for sums of a few hundred terms.
// Looser, and why:
//   matmul*: K up to 769 products per output summed by cuBLASLt in its own blocked / split-K
//            order (and dweight sums N rows): rounding grows with the length of the sum.
//   *norm_backward: dweight sums N rows and dinp subtracts two row means (cancellation).
//   attention_backward: dk, dv sum over all T queries, and dS = P (dP - rowsum(dO O)) cancels.
//   embedding_backward: none needed (adds a handful of rows), kept at the default.
// bf16 ~1e-2: bf16 keeps 8 mantissa bits (an output rounding alone is up to 2^-9 = 2e-3).
//   attention*: cuDNN (and our kernel in bf16) round P and dP to bf16 before the tensor-core
//            GEMMs, and backward's dS cancels: 2e-2.
//   matmul_backward: dinp in bf16 sums up to 769 bf16 products rounded once; dweight is f32 but
//            reads bf16 dout: 2e-2.
struct Tol {
  double f32, bf16;
};
const std::map<std::string, Tol> kTolerance = {
    {"default", {1e-5, 1e-2}},
    {"cast", {0, 0}},  // round to nearest even on both: bit-exact
    {"matmul_forward", {1e-4, 1e-2}},
    {"matmul_gelu_forward", {1e-4, 1e-2}},
    {"matmul_backward", {1e-4, 2e-2}},
    {"layernorm_backward", {1e-4, 1e-2}},
    {"rmsnorm_backward", {1e-4, 1e-2}},
    {"attention_forward", {2e-5, 2e-2}},
    {"attention_backward", {1e-4, 2e-2}},
    {"attention_decode", {2e-5, 2e-2}},
    {"sum_squares", {1e-6, 1e-6}},  // f32 input, double accumulation
};
double tolerance(const std::string& op, DType t) {
  auto it = kTolerance.find(op);
  if (it == kTolerance.end()) {
    // "attention_forward.cudnn" and similar variants share their op's entry.
    it = kTolerance.find(op.substr(0, op.find('.')));
    if (it == kTolerance.end()) it = kTolerance.find("default");
  }
  return t == DType::BF16 ? it->second.bf16 : it->second.f32;
}

uint64_t g_seed = 0;
Backend* g_gpu = nullptr;
Backend& gpu() { return *g_gpu; }
Backend& cpu() { return cpu_backend(); }

// ---- one tensor on both backends -----------------------------------------------------------
// `ref` holds the CPU's f32 values (bf16-rounded where the GPU stores bf16); `dev` the GPU's
// storage in `dtype`. The CPU op works on ref in place; read() brings the GPU's values back.
struct Pair {
  std::string name;
  DType dtype = DType::F32;  // the GPU's storage dtype (the CPU is always f32, or i32)
  std::vector<float> ref;
  std::vector<int32_t> ids;  // i32 tensors (tokens, targets)
  DeviceBuffer dev;
  bool output = false;

  size_t n() const { return dtype == DType::I32 ? ids.size() : ref.size(); }
  TensorView c() {
    return dtype == DType::I32 ? TensorView::i32(ids.data(), {(int64_t)ids.size()})
                               : TensorView::f32(ref.data(), {(int64_t)ref.size()});
  }
  TensorView g() const { return dev.view(); }
  // Host -> GPU in the GPU's dtype.
  void upload() {
    dev = DeviceBuffer(gpu().allocator(), dtype, n());
    if (dtype == DType::I32) {
      gpu().copy(dev.view(), c());
    } else if (dtype == DType::BF16) {
      std::vector<uint16_t> h(ref.size());
      for (size_t i = 0; i < h.size(); i++) h[i] = f32_to_bf16(ref[i]);
      gpu().copy(dev.view(), TensorView(h.data(), {(int64_t)h.size()}, DType::BF16));
    } else {
      gpu().copy(dev.view(), c());
    }
  }
  // Fills the GPU copy with NaN bytes (0xFF.. is a NaN in f32 and in bf16).
  void poison() {
    std::vector<unsigned char> nan(dev.bytes(), 0xFF);
    gpu().copy(dev.view(), TensorView(nan.data(), {(int64_t)n()}, dtype));
  }
  std::vector<float> read() {
    gpu().synchronize();
    std::vector<float> out(ref.size());
    if (dtype == DType::BF16) {
      std::vector<uint16_t> h(ref.size());
      gpu().copy(TensorView(h.data(), {(int64_t)h.size()}, DType::BF16), dev.view());
      for (size_t i = 0; i < h.size(); i++) out[i] = bf16_to_f32(h[i]);
    } else {
      gpu().copy(TensorView::f32(out.data(), {(int64_t)out.size()}), dev.view());
    }
    return out;
  }
};

struct Err {
  double max_abs = 0, max_rel = 0;
  size_t nonfinite = 0;  // GPU NaN/inf where the CPU is finite (an element never written)
};
Err compare(const std::vector<float>& got, const std::vector<float>& want) {
  Err e;
  double scale = 0;
  for (float w : want) scale = std::max(scale, (double)std::fabs(w));
  for (size_t i = 0; i < want.size(); i++) {
    if (!std::isfinite(got[i])) {
      if (std::isfinite(want[i])) e.nonfinite++;
      continue;
    }
    e.max_abs = std::max(e.max_abs, std::fabs((double)got[i] - (double)want[i]));
  }
  e.max_rel = e.max_abs / std::max(scale, 1e-30);
  return e;
}

// One op's tensors: inputs (random, or given), outputs (poisoned on the GPU) and accumulated
// outputs (the same random start on both). bf16 applies to the tensors marked T.
class Case {
 public:
  Case(std::string op, DType t) : op_(std::move(op)), t_(t), rng_(g_seed ^ std::hash<std::string>{}(op_)) {}

  DType T() const { return t_; }
  std::mt19937_64& rng() { return rng_; }
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng_); }

  // A tensor of n values given (rounded to bf16 when stored as bf16).
  Pair& given(const std::string& name, std::vector<float> v, bool is_T) {
    Pair& p = add(name, is_T ? t_ : DType::F32);
    p.ref = std::move(v);
    if (p.dtype == DType::BF16)
      for (float& x : p.ref) x = round_bf16(x);
    p.upload();
    return p;
  }
  Pair& input(const std::string& name, size_t n, bool is_T, float lo = -1, float hi = 1) {
    std::vector<float> v(n);
    for (float& x : v) x = uniform(lo, hi);
    return given(name, std::move(v), is_T);
  }
  Pair& ids(const std::string& name, size_t n, int lo, int hi) {
    Pair& p = add(name, DType::I32);
    p.ids.resize(n);
    for (auto& x : p.ids) x = std::uniform_int_distribution<int>(lo, hi - 1)(rng_);
    p.upload();
    return p;
  }
  Pair& output(const std::string& name, size_t n, bool is_T) {
    Pair& p = add(name, is_T ? t_ : DType::F32);
    p.ref.assign(n, 0.f);
    p.upload();
    p.poison();
    p.output = true;
    return p;
  }
  Pair& accumulated(const std::string& name, size_t n, bool is_T) {
    Pair& p = input(name, n, is_T, -0.5f, 0.5f);
    p.output = true;
    return p;
  }
  // An input the op also writes (rope's in-place x).
  Pair& inout(const std::string& name, size_t n, bool is_T, float lo = -1, float hi = 1) {
    Pair& p = input(name, n, is_T, lo, hi);
    p.output = true;
    return p;
  }
  Pair& operator[](const std::string& name) { return *tensors_.at(name); }

  // Compares every output, prints the OPERR line under `label` (default: the op), and checks
  // the tolerance. Returns the worst error.
  Err check(const std::string& label = "") {
    const std::string name = label.empty() ? op_ : label;
    Err worst;
    std::string worst_out = "-";
    for (auto& [n, p] : tensors_) {
      if (!p->output) continue;
      const Err e = compare(p->read(), p->ref);
      worst.nonfinite += e.nonfinite;
      if (e.max_rel >= worst.max_rel) {
        worst.max_rel = e.max_rel, worst.max_abs = std::max(worst.max_abs, e.max_abs);
        worst_out = n;
      }
    }
    report(name, worst, worst_out);
    return worst;
  }
  void report(const std::string& name, const Err& e, const std::string& worst_out) {
    const double tol = tolerance(name, t_);
    std::printf("OPERR op=%s dtype=%s max_abs=%.3e max_rel=%.3e tol=%.0e worst=%s nonfinite=%zu\n",
                name.c_str(), dtype_name(t_), e.max_abs, e.max_rel, tol, worst_out.c_str(),
                e.nonfinite);
    std::fflush(stdout);
    EXPECT_EQ(e.nonfinite, 0u) << name << " " << dtype_name(t_) << ": " << worst_out
                               << " has elements the GPU never wrote (NaN poison left)";
    EXPECT_LE(e.max_rel, tol) << name << " " << dtype_name(t_) << " (seed " << g_seed << ")";
  }

 private:
  Pair& add(const std::string& name, DType d) {
    auto p = std::make_unique<Pair>();
    p->name = name;
    p->dtype = d;
    Pair& ref = *p;
    tensors_[name] = std::move(p);
    return ref;
  }
  std::string op_;
  DType t_;
  std::mt19937_64 rng_;
  std::map<std::string, std::unique_ptr<Pair>> tensors_;
};

// --self-test-on-cpu (no GPU needed) runs the harness with the CPU backend in the GPU's place:
// f32 only (the CPU backend has no bf16 ops); every error must be 0. It proves the shapes,
// argument sizes and bookkeeping here before a rare GPU run.
bool g_self_test = false;
std::vector<DType> dtypes() {
  return g_self_test ? std::vector<DType>{DType::F32} : std::vector<DType>{DType::F32, DType::BF16};
}
// Row-wise means and rstd of x [N,C] as the forward saves them (inputs of the backward tests).
void layernorm_stats(Case& k, const std::vector<float>& x, int N, int C) {
  std::vector<float> out((size_t)N * C), mean(N), rstd(N), w(C, 1.f), b(C, 0.f);
  auto v = [](std::vector<float>& a) { return TensorView::f32(a.data(), {(int64_t)a.size()}); };
  cpu().layernorm_forward(v(out), v(mean), v(rstd), TensorView::f32(const_cast<float*>(x.data()), {(int64_t)x.size()}),
                          v(w), v(b), N, C, 1e-5f);
  k.given("mean", mean, false);
  k.given("rstd", rstd, false);
}

// ---- embedding -------------------------------------------------------------------------------
TEST(GpuOps, Embedding) {
  const int B = 3, T = 37, C = 77, vocab_start = 10, vocab_count = 40;  // tokens in [0, 60)
  for (DType t : dtypes())
    for (bool with_wpe : {true, false}) {
      Case k(with_wpe ? "embedding_forward" : "embedding_forward.nowpe", t);
      k.ids("tokens", (size_t)B * T, 0, 60);
      k.input("wte", (size_t)vocab_count * C, true);
      if (with_wpe) k.input("wpe", (size_t)T * C, true);
      k.output("out", (size_t)B * T * C, true);
      TensorView wpe_c = with_wpe ? k["wpe"].c() : TensorView(), wpe_g = with_wpe ? k["wpe"].g() : TensorView();
      cpu().embedding_forward(k["out"].c(), k["tokens"].c(), k["wte"].c(), wpe_c, B, T, C, vocab_start, vocab_count);
      gpu().embedding_forward(k["out"].g(), k["tokens"].g(), k["wte"].g(), wpe_g, B, T, C, vocab_start, vocab_count);
      k.check();
    }
  for (DType t : dtypes()) {
    Case k("embedding_backward", t);
    k.ids("tokens", (size_t)B * T, 0, 60);
    k.input("dout", (size_t)B * T * C, true);
    k.accumulated("dwte", (size_t)vocab_count * C, false);
    k.accumulated("dwpe", (size_t)T * C, false);
    cpu().embedding_backward(k["dwte"].c(), k["dwpe"].c(), k["dout"].c(), k["tokens"].c(), B, T, C, vocab_start, vocab_count);
    gpu().embedding_backward(k["dwte"].g(), k["dwpe"].g(), k["dout"].g(), k["tokens"].g(), B, T, C, vocab_start, vocab_count);
    k.check();
  }
}

// ---- LayerNorm -------------------------------------------------------------------------------
TEST(GpuOps, LayerNorm) {
  const int N = 37, C = 333;  // C not a multiple of 32 nor of a block
  const float eps = 1e-5f;
  for (DType t : dtypes()) {
    {
      Case k("layernorm_forward", t);
      k.input("inp", (size_t)N * C, true, -2, 3);
      k.input("weight", C, true), k.input("bias", C, true);
      k.output("out", (size_t)N * C, true), k.output("mean", N, false), k.output("rstd", N, false);
      cpu().layernorm_forward(k["out"].c(), k["mean"].c(), k["rstd"].c(), k["inp"].c(), k["weight"].c(), k["bias"].c(), N, C, eps);
      gpu().layernorm_forward(k["out"].g(), k["mean"].g(), k["rstd"].g(), k["inp"].g(), k["weight"].g(), k["bias"].g(), N, C, eps);
      k.check();
    }
    {
      Case k("layernorm_apply", t);
      Pair& inp = k.input("inp", (size_t)N * C, true, -2, 3);
      layernorm_stats(k, inp.ref, N, C);
      k.input("weight", C, true), k.input("bias", C, true);
      k.output("out", (size_t)N * C, true);
      cpu().layernorm_apply(k["out"].c(), k["inp"].c(), k["mean"].c(), k["rstd"].c(), k["weight"].c(), k["bias"].c(), N, C);
      gpu().layernorm_apply(k["out"].g(), k["inp"].g(), k["mean"].g(), k["rstd"].g(), k["weight"].g(), k["bias"].g(), N, C);
      k.check();
    }
    {
      Case k("residual_layernorm_forward", t);
      k.input("a", (size_t)N * C, true, -2, 2), k.input("b", (size_t)N * C, true);
      k.input("weight", C, true), k.input("bias", C, true);
      k.output("x", (size_t)N * C, true), k.output("out", (size_t)N * C, true);
      k.output("mean", N, false), k.output("rstd", N, false);
      cpu().residual_layernorm_forward(k["x"].c(), k["out"].c(), k["mean"].c(), k["rstd"].c(), k["a"].c(), k["b"].c(), k["weight"].c(), k["bias"].c(), N, C, eps);
      gpu().residual_layernorm_forward(k["x"].g(), k["out"].g(), k["mean"].g(), k["rstd"].g(), k["a"].g(), k["b"].g(), k["weight"].g(), k["bias"].g(), N, C, eps);
      k.check();
    }
    {
      Case k("layernorm_backward", t);
      Pair& inp = k.input("inp", (size_t)N * C, true, -2, 3);
      layernorm_stats(k, inp.ref, N, C);
      k.input("weight", C, true), k.input("dout", (size_t)N * C, true);
      k.accumulated("dinp", (size_t)N * C, true);
      k.accumulated("dweight", C, false), k.accumulated("dbias", C, false);
      cpu().layernorm_backward(k["dinp"].c(), k["dweight"].c(), k["dbias"].c(), k["dout"].c(), k["inp"].c(), k["weight"].c(), k["mean"].c(), k["rstd"].c(), N, C);
      gpu().layernorm_backward(k["dinp"].g(), k["dweight"].g(), k["dbias"].g(), k["dout"].g(), k["inp"].g(), k["weight"].g(), k["mean"].g(), k["rstd"].g(), N, C);
      k.check();
    }
  }
}

// ---- RMSNorm ---------------------------------------------------------------------------------
TEST(GpuOps, RmsNorm) {
  const int N = 41, C = 259;
  const float eps = 1e-5f;
  for (DType t : dtypes()) {
    auto rstd_of = [&](Case& k, const std::vector<float>& x) {
      std::vector<float> out((size_t)N * C), rstd(N), w(C, 1.f);
      cpu().rmsnorm_forward(TensorView::f32(out.data(), {(int64_t)out.size()}), TensorView::f32(rstd.data(), {N}),
                            TensorView::f32(const_cast<float*>(x.data()), {(int64_t)x.size()}),
                            TensorView::f32(w.data(), {C}), N, C, eps);
      k.given("rstd", rstd, false);
    };
    {
      Case k("rmsnorm_forward", t);
      k.input("inp", (size_t)N * C, true, -2, 3), k.input("weight", C, true);
      k.output("out", (size_t)N * C, true), k.output("rstd", N, false);
      cpu().rmsnorm_forward(k["out"].c(), k["rstd"].c(), k["inp"].c(), k["weight"].c(), N, C, eps);
      gpu().rmsnorm_forward(k["out"].g(), k["rstd"].g(), k["inp"].g(), k["weight"].g(), N, C, eps);
      k.check();
    }
    {
      Case k("rmsnorm_apply", t);
      rstd_of(k, k.input("inp", (size_t)N * C, true, -2, 3).ref);
      k.input("weight", C, true), k.output("out", (size_t)N * C, true);
      cpu().rmsnorm_apply(k["out"].c(), k["inp"].c(), k["rstd"].c(), k["weight"].c(), N, C);
      gpu().rmsnorm_apply(k["out"].g(), k["inp"].g(), k["rstd"].g(), k["weight"].g(), N, C);
      k.check();
    }
    {
      Case k("residual_rmsnorm_forward", t);
      k.input("a", (size_t)N * C, true, -2, 2), k.input("b", (size_t)N * C, true), k.input("weight", C, true);
      k.output("x", (size_t)N * C, true), k.output("out", (size_t)N * C, true), k.output("rstd", N, false);
      cpu().residual_rmsnorm_forward(k["x"].c(), k["out"].c(), k["rstd"].c(), k["a"].c(), k["b"].c(), k["weight"].c(), N, C, eps);
      gpu().residual_rmsnorm_forward(k["x"].g(), k["out"].g(), k["rstd"].g(), k["a"].g(), k["b"].g(), k["weight"].g(), N, C, eps);
      k.check();
    }
    {
      Case k("rmsnorm_backward", t);
      rstd_of(k, k.input("inp", (size_t)N * C, true, -2, 3).ref);
      k.input("weight", C, true), k.input("dout", (size_t)N * C, true);
      k.accumulated("dinp", (size_t)N * C, true), k.accumulated("dweight", C, false);
      cpu().rmsnorm_backward(k["dinp"].c(), k["dweight"].c(), k["dout"].c(), k["inp"].c(), k["weight"].c(), k["rstd"].c(), N, C);
      gpu().rmsnorm_backward(k["dinp"].g(), k["dweight"].g(), k["dout"].g(), k["inp"].g(), k["weight"].g(), k["rstd"].g(), N, C);
      k.check();
    }
  }
}

// ---- GEMMs (cuBLASLt) ------------------------------------------------------------------------
// Shapes: ragged small, a column block of a wider output (ldo > OC), and a long K (769).
struct GemmShape {
  int N, C, OC, ld;
  bool bias;
};
const GemmShape kGemms[] = {{37, 97, 61, 61, true}, {45, 64, 40, 131, false}, {33, 769, 129, 129, true}};

// ".NxCxOC" (and the row stride where it is wider): one OPERR line per shape.
std::string shape_tag(const GemmShape& s) {
  return s.ld > s.OC ? fmt::format(".{}x{}x{}_ld{}", s.N, s.C, s.OC, s.ld)
                     : fmt::format(".{}x{}x{}", s.N, s.C, s.OC);
}

TEST(GpuOps, Matmul) {
  for (DType t : dtypes())
    for (const GemmShape& s : kGemms) {
      Case k("matmul_forward" + shape_tag(s), t);
      k.input("inp", (size_t)s.N * s.C, true), k.input("weight", (size_t)s.OC * s.C, true);
      if (s.bias) k.input("bias", s.OC, true);
      // With ldo > OC the columns in between belong to someone else: they must stay untouched,
      // so the output starts from the same values on both sides (not poisoned).
      if (s.ld > s.OC) k.accumulated("out", (size_t)s.N * s.ld, true);
      else k.output("out", (size_t)s.N * s.OC, true);
      TensorView bc = s.bias ? k["bias"].c() : TensorView(), bg = s.bias ? k["bias"].g() : TensorView();
      cpu().matmul_forward(k["out"].c(), k["inp"].c(), k["weight"].c(), bc, s.N, s.C, s.OC, s.ld);
      gpu().matmul_forward(k["out"].g(), k["inp"].g(), k["weight"].g(), bg, s.N, s.C, s.OC, s.ld);
      k.check();
    }
  for (DType t : dtypes())
    for (const GemmShape& s : kGemms) {
      if (!s.bias) continue;
      Case k("matmul_gelu_forward" + shape_tag(s), t);
      k.input("inp", (size_t)s.N * s.C, true), k.input("weight", (size_t)s.OC * s.C, true), k.input("bias", s.OC, true);
      k.output("out", (size_t)s.N * s.OC, true), k.output("pre", (size_t)s.N * s.OC, true);
      cpu().matmul_gelu_forward(k["out"].c(), k["pre"].c(), k["inp"].c(), k["weight"].c(), k["bias"].c(), s.N, s.C, s.OC);
      gpu().matmul_gelu_forward(k["out"].g(), k["pre"].g(), k["inp"].g(), k["weight"].g(), k["bias"].g(), s.N, s.C, s.OC);
      k.check();
    }
  for (DType t : dtypes())
    for (const GemmShape& s : kGemms)
      for (bool acc : {false, true}) {
        Case k(std::string(acc ? "matmul_backward.accumulate" : "matmul_backward") + shape_tag(s), t);
        k.input("dout", (size_t)s.N * s.ld, true), k.input("inp", (size_t)s.N * s.C, true);
        k.input("weight", (size_t)s.OC * s.C, true);
        if (acc) k.accumulated("dinp", (size_t)s.N * s.C, true);
        else k.output("dinp", (size_t)s.N * s.C, true);
        k.accumulated("dweight", (size_t)s.OC * s.C, false);
        if (s.bias) k.accumulated("dbias", s.OC, false);
        TensorView bc = s.bias ? k["dbias"].c() : TensorView(), bg = s.bias ? k["dbias"].g() : TensorView();
        cpu().matmul_backward(k["dinp"].c(), k["dweight"].c(), bc, k["dout"].c(), k["inp"].c(), k["weight"].c(), s.N, s.C, s.OC, s.ld, acc);
        gpu().matmul_backward(k["dinp"].g(), k["dweight"].g(), bg, k["dout"].g(), k["inp"].g(), k["weight"].g(), s.N, s.C, s.OC, s.ld, acc);
        k.check();
      }
}

// ---- attention: cuDNN and our kernel, each against the CPU, and against each other -----------
// Selects the attention implementation (CudaBackend::set_attention_impl) when this build has
// the CUDA backend; false where it cannot (a stub build). Auto: the backend's own choice.
enum class Attn { Auto, Cudnn, Ours };
#ifdef CR_GPU_TEST_HAVE_CUDA
bool select_attention(Attn a) {
  auto* b = dynamic_cast<cuda::CudaBackend*>(g_gpu);
  if (!b) return false;
  using I = cuda::CudaBackend::AttentionImpl;
  b->set_attention_impl(a == Attn::Cudnn ? I::Cudnn : a == Attn::Ours ? I::Ours : I::Auto);
  return true;
}
#else
bool select_attention(Attn) { return false; }
#endif

struct AttnShape {
  int B, T, H, Hkv, hs;
};
// GQA (4 query heads on 2 kv heads) at a ragged T, and MHA; hs 64 (cuDNN needs hs % 8 == 0).
const AttnShape kAttn[] = {{2, 45, 4, 2, 64}, {1, 77, 3, 3, 64}};

// Runs forward and backward of one implementation on the GPU against the CPU; returns the GPU
// outputs (out, lse, dqkv) for the cuDNN-vs-ours comparison. With `range` ([B,T,2] key ranges,
// backend.h) both sides get it as kv_range.
struct AttnOut {
  std::vector<float> out, lse, dqkv;
};
// The kv_range tensor of a case (empty views without a range).
struct RangeArg {
  TensorView c, g;
};
RangeArg range_arg(Case& k, const std::vector<int32_t>* range) {
  if (!range) return {};
  Pair& p = k.ids("kv_range", range->size(), 0, 1);
  p.ids = *range;
  p.upload();
  return {p.c(), p.g()};
}
AttnOut attention_case(const AttnShape& s, DType t, const char* impl, uint64_t seed_salt,
                       const std::vector<int32_t>* range = nullptr, const char* mask = "") {
  const size_t rows = (size_t)s.B * s.T, qkv_n = rows * (s.H + 2 * s.Hkv) * s.hs;
  const size_t out_n = rows * s.H * s.hs, lse_n = (size_t)s.B * s.H * s.T;
  AttnOut r;
  const std::string suffix = std::string(".") + impl + (s.H == s.Hkv ? ".mha" : ".gqa") + mask;
  {
    Case k("attention_forward" + suffix, t);
    k.rng().seed(g_seed + seed_salt);  // the same inputs for both implementations
    k.input("qkv", qkv_n, true, -2, 2);
    k.output("out", out_n, true), k.output("lse", lse_n, false);
    const RangeArg kr = range_arg(k, range);
    cpu().attention_forward(k["out"].c(), k["lse"].c(), k["qkv"].c(), s.B, s.T, s.H, s.Hkv, s.hs, kr.c);
    gpu().attention_forward(k["out"].g(), k["lse"].g(), k["qkv"].g(), s.B, s.T, s.H, s.Hkv, s.hs, kr.g);
    k.check();
    r.out = k["out"].read(), r.lse = k["lse"].read();
  }
  {
    Case k("attention_backward" + suffix, t);
    k.rng().seed(g_seed + seed_salt + 1);
    Pair& qkv = k.input("qkv", qkv_n, true, -2, 2);
    const RangeArg kr = range_arg(k, range);
    // out and lse from the CPU forward (out rounded to bf16 like a bf16 forward stores it).
    std::vector<float> out(out_n), lse(lse_n);
    cpu().attention_forward(TensorView::f32(out.data(), {(int64_t)out_n}), TensorView::f32(lse.data(), {(int64_t)lse_n}),
                            qkv.c(), s.B, s.T, s.H, s.Hkv, s.hs, kr.c);
    k.given("out", out, true), k.given("lse", lse, false);
    k.input("dout", out_n, true);
    k.output("dqkv", qkv_n, true);
    cpu().attention_backward(k["dqkv"].c(), k["dout"].c(), k["qkv"].c(), k["out"].c(), k["lse"].c(), s.B, s.T, s.H, s.Hkv, s.hs, kr.c);
    gpu().attention_backward(k["dqkv"].g(), k["dout"].g(), k["qkv"].g(), k["out"].g(), k["lse"].g(), s.B, s.T, s.H, s.Hkv, s.hs, kr.g);
    k.check();
    r.dqkv = k["dqkv"].read();
  }
  return r;
}

TEST(GpuOps, Attention) {
  for (DType t : dtypes())
    for (const AttnShape& s : kAttn) {
      const uint64_t salt = (uint64_t)s.T * 131 + s.H;
      if (!select_attention(Attn::Ours)) {  // no implementation switch: whatever the backend uses
        attention_case(s, t, "default", salt);
        continue;
      }
      const AttnOut ours = attention_case(s, t, "ours", salt);
      select_attention(Attn::Auto);
      if (t != DType::BF16) continue;  // cuDNN's SDPA runs in bf16 (and fp16) only
      ASSERT_TRUE(select_attention(Attn::Cudnn));
      const AttnOut dnn = attention_case(s, t, "cudnn", salt);
      select_attention(Attn::Auto);
      // cuDNN against our kernel, both on the GPU, the same inputs.
      const std::string tag = s.H == s.Hkv ? ".mha" : ".gqa";
      Case k("attention_forward.cudnn_vs_ours" + tag, t);
      struct Pairing {
        const char *op, *name;
        const std::vector<float>*a, *b;
      };
      const Pairing pairs[] = {{"attention_forward", "out", &dnn.out, &ours.out},
                               {"attention_forward", "lse", &dnn.lse, &ours.lse},
                               {"attention_backward", "dqkv", &dnn.dqkv, &ours.dqkv}};
      for (const Pairing& p : pairs)
        k.report(std::string(p.op) + ".cudnn_vs_ours" + tag + "." + p.name, compare(*p.a, *p.b), p.name);
    }
}

// Key ranges (document mask, prefix-LM) run our kernels under Auto too, in f32 and bf16, against
// the CPU; forcing cuDNN with a range is an error naming the range.
// Ranges: documents of 13 tokens; prefix-LM prompts are each document's first 9 (prompt tokens
// see the whole prompt, keys after them included).
std::vector<int32_t> attention_ranges(const AttnShape& s, bool prefix_lm) {
  std::vector<int32_t> r(2 * (size_t)s.B * s.T);
  for (int b = 0; b < s.B; b++)
    for (int t = 0; t < s.T; t++) {
      const int d0 = (t + 5 * b) / 13 * 13 - 5 * b;  // documents offset per sequence
      const int start = std::max(d0, 0), prompt_end = std::min(d0 + 8, s.T - 1);
      int32_t* row = r.data() + 2 * ((size_t)b * s.T + t);
      row[0] = start;
      row[1] = prefix_lm && t <= prompt_end ? prompt_end : t;
    }
  return r;
}

TEST(GpuOps, AttentionMasked) {
  const AttnShape s = kAttn[0];
  for (DType t : dtypes())
    for (bool prefix_lm : {false, true}) {
      const std::vector<int32_t> range = attention_ranges(s, prefix_lm);
      select_attention(Attn::Auto);
      attention_case(s, t, "auto", (uint64_t)s.T * 131 + 7, &range,
                     prefix_lm ? ".prefix_lm" : ".document");
    }
  if (!select_attention(Attn::Cudnn)) return;
  const std::vector<int32_t> range = attention_ranges(s, true);
  DeviceBuffer qkv(gpu().allocator(), DType::BF16, (size_t)s.B * s.T * (s.H + 2 * s.Hkv) * s.hs);
  DeviceBuffer out(gpu().allocator(), DType::BF16, (size_t)s.B * s.T * s.H * s.hs);
  DeviceBuffer lse(gpu().allocator(), DType::F32, (size_t)s.B * s.H * s.T);
  DeviceBuffer kr(gpu().allocator(), DType::I32, range.size());
  gpu().copy(kr.view(), TensorView::i32(const_cast<int32_t*>(range.data()), {(int64_t)range.size()}));
  std::string what;
  try {
    gpu().attention_forward(out.view(), lse.view(), qkv.view(), s.B, s.T, s.H, s.Hkv, s.hs, kr.view());
  } catch (const Error& e) {
    what = e.what();
  }
  select_attention(Attn::Auto);
  EXPECT_NE(what.find("kv_range"), std::string::npos) << what;
}

TEST(GpuOps, AttentionDecode) {
  const int H = 4, Hkv = 2, hs = 64;
  for (DType t : dtypes())
    for (int len : {1, 45, 300}) {
      Case k("attention_decode.len" + std::to_string(len), t);
      k.input("q", (size_t)H * hs, true, -2, 2);
      k.input("kcache", (size_t)len * Hkv * hs, true, -2, 2), k.input("vcache", (size_t)len * Hkv * hs, true);
      k.output("out", (size_t)H * hs, true);
      cpu().attention_decode(k["out"].c(), k["q"].c(), k["kcache"].c(), k["vcache"].c(), len, H, Hkv, hs);
      gpu().attention_decode(k["out"].g(), k["q"].g(), k["kcache"].g(), k["vcache"].g(), len, H, Hkv, hs);
      k.check();
    }
}

// ---- RoPE: rows ld apart, rotating the first n_heads heads only, from position pos0 ----------
TEST(GpuOps, Rope) {
  const int B = 2, T = 29, hs = 32, n_heads = 3, ld = 6 * hs + 5;
  for (DType t : dtypes())
    for (bool fwd : {true, false}) {
      Case k(fwd ? "rope_forward" : "rope_backward", t);
      k.inout("x", (size_t)B * T * ld, true, -2, 2);
      if (fwd) {
        cpu().rope_forward(k["x"].c(), B, T, ld, n_heads, hs, 10000.f, 7);
        gpu().rope_forward(k["x"].g(), B, T, ld, n_heads, hs, 10000.f, 7);
      } else {
        cpu().rope_backward(k["x"].c(), B, T, ld, n_heads, hs, 10000.f, 7);
        gpu().rope_backward(k["x"].g(), B, T, ld, n_heads, hs, 10000.f, 7);
      }
      k.check();
    }
}

// ---- element-wise ----------------------------------------------------------------------------
TEST(GpuOps, Elementwise) {
  const size_t n = 100003;  // not a multiple of any block
  const int N = 37, F = 173;
  for (DType t : dtypes()) {
    {
      Case k("gelu_forward", t);
      k.input("inp", n, true, -5, 5), k.output("out", n, true);
      cpu().gelu_forward(k["out"].c(), k["inp"].c(), n);
      gpu().gelu_forward(k["out"].g(), k["inp"].g(), n);
      k.check();
    }
    {
      Case k("gelu_backward", t);
      k.input("inp", n, true, -5, 5), k.input("dout", n, true), k.output("dinp", n, true);
      cpu().gelu_backward(k["dinp"].c(), k["inp"].c(), k["dout"].c(), n);
      gpu().gelu_backward(k["dinp"].g(), k["inp"].g(), k["dout"].g(), n);
      k.check();
    }
    {
      Case k("swiglu_forward", t);
      k.input("inp", (size_t)N * 2 * F, true, -4, 4), k.output("out", (size_t)N * F, true);
      cpu().swiglu_forward(k["out"].c(), k["inp"].c(), N, F);
      gpu().swiglu_forward(k["out"].g(), k["inp"].g(), N, F);
      k.check();
    }
    {
      Case k("swiglu_backward", t);
      k.input("inp", (size_t)N * 2 * F, true, -4, 4), k.input("dout", (size_t)N * F, true);
      k.output("dinp", (size_t)N * 2 * F, true);
      cpu().swiglu_backward(k["dinp"].c(), k["inp"].c(), k["dout"].c(), N, F);
      gpu().swiglu_backward(k["dinp"].g(), k["inp"].g(), k["dout"].g(), N, F);
      k.check();
    }
    {
      Case k("residual_forward", t);
      k.input("a", n, true), k.input("b", n, true), k.output("out", n, true);
      cpu().residual_forward(k["out"].c(), k["a"].c(), k["b"].c(), n);
      gpu().residual_forward(k["out"].g(), k["a"].g(), k["b"].g(), n);
      k.check();
    }
  }
  {  // scale: f32 only (it scales gradients)
    Case k("scale", DType::F32);
    k.inout("x", n, false);
    cpu().scale(k["x"].c(), 0.37f);
    gpu().scale(k["x"].g(), 0.37f);
    k.check();
  }
}

// ---- casts: f32 -> bf16 rounds to nearest even on both; bf16 -> f32 is exact -----------------
TEST(GpuOps, Cast) {
  if (g_self_test) GTEST_SKIP() << "the CPU backend stores no bf16 outside cast";
  const size_t n = 70001;
  Case k("cast", DType::BF16);
  std::vector<float> x(n);
  for (float& v : x) v = k.uniform(-3, 3) * std::pow(2.f, k.uniform(-20, 20));
  x[0] = 1.00390625f;  // halfway between two bf16 values: ties to even
  Pair& src = k.given("src", x, false);
  k.output("dst", n, true);
  // The CPU side: its own cast, f32 -> bf16 -> f32.
  std::vector<uint16_t> h(n);
  cpu().cast(TensorView(h.data(), {(int64_t)n}, DType::BF16), src.c());
  for (size_t i = 0; i < n; i++) k["dst"].ref[i] = bf16_to_f32(h[i]);
  gpu().cast(k["dst"].g(), src.g());
  k.check("cast.f32_to_bf16");

  Case b("cast", DType::BF16);
  Pair& bs = b.given("src", x, true);  // bf16 values on the GPU
  Pair& bd = b.output("dst", n, false);
  bd.ref = bs.ref;  // exact
  gpu().cast(bd.g(), bs.g());
  b.check("cast.bf16_to_f32");
}

// ---- vocabulary-parallel cross-entropy: two shards of a padded vocabulary --------------------
TEST(GpuOps, CrossEntropy) {
  const int N = 37, Vl = 67, V = 120;  // shards [0, 67) and [67, 134): 67 + 53 real, 14 padding
  for (DType t : dtypes())
    for (int shard : {0, 1}) {
      const int v0 = shard * Vl, n_valid = std::min(Vl, V - v0);
      const std::string tag = shard ? ".shard1" : ".shard0";
      std::vector<float> logits((size_t)N * Vl);
      std::vector<int32_t> targets(N);
      {
        Case k("crossentropy_row_max" + tag, t);
        Pair& l = k.input("logits", (size_t)N * Vl, true, -8, 8);
        k.output("row_max", N, false);
        cpu().crossentropy_row_max(k["row_max"].c(), l.c(), N, Vl, n_valid);
        gpu().crossentropy_row_max(k["row_max"].g(), l.g(), N, Vl, n_valid);
        k.check();
        logits = l.ref;
      }
      Case k("crossentropy_row_sums" + tag, t);
      k.given("logits", logits, true);
      Pair& tg = k.ids("targets", N, 0, V);
      tg.ids[3] = -1, tg.ids[10] = -100;  // not counted: target logit 0, zero gradient row
      tg.upload();
      targets = tg.ids;
      std::vector<float> row_max(N);
      cpu().crossentropy_row_max(TensorView::f32(row_max.data(), {N}), k["logits"].c(), N, Vl, n_valid);
      k.given("row_max", row_max, false);
      k.output("sums", 2 * N, false);
      cpu().crossentropy_row_sums(k["sums"].c(), k["logits"].c(), k["row_max"].c(), k["targets"].c(), N, Vl, v0, n_valid);
      gpu().crossentropy_row_sums(k["sums"].g(), k["logits"].g(), k["row_max"].g(), k["targets"].g(), N, Vl, v0, n_valid);
      k.check();

      Case d("crossentropy_backward" + tag, t);
      d.given("logits", logits, true);
      d.given("row_max", row_max, false);
      d.given("sums", k["sums"].ref, false);
      Pair& dt = d.ids("targets", N, 0, V);
      dt.ids = targets;
      dt.upload();
      d.output("dlogits", (size_t)N * Vl, true);
      cpu().crossentropy_backward(d["dlogits"].c(), d["logits"].c(), d["row_max"].c(), d["sums"].c(), d["targets"].c(), N, Vl, v0, n_valid, 1.f / N);
      gpu().crossentropy_backward(d["dlogits"].g(), d["logits"].g(), d["row_max"].g(), d["sums"].g(), d["targets"].g(), N, Vl, v0, n_valid, 1.f / N);
      d.check();
    }
}

// ---- optimizer and global norm (f32 only: master weights, gradients and Adam state) ----------
TEST(GpuOps, AdamWAndNorm) {
  const size_t n = 50021;
  const Backend::AdamWSegment segs[] = {{0, 20000, 0.1f}, {20000, 777, 0.f}, {20777, n - 20777, 0.1f}};
  for (int step : {1, 7}) {
    Case k("adamw_step.step" + std::to_string(step), DType::F32);
    k.inout("params", n, false), k.input("grads", n, false);
    k.inout("m", n, false);
    Pair& v = k.inout("v", n, false);
    for (float& x : v.ref) x = x * x * 1e-2f;  // v >= 0
    v.upload();
    cpu().adamw_step(k["params"].c(), k["grads"].c(), k["m"].c(), k["v"].c(), segs, 3, 3e-3f, 0.9f, 0.95f, 1e-8f, step);
    gpu().adamw_step(k["params"].g(), k["grads"].g(), k["m"].g(), k["v"].g(), segs, 3, 3e-3f, 0.9f, 0.95f, 1e-8f, step);
    k.check();
  }
  for (size_t len : {(size_t)1, (size_t)1000003}) {
    Case k("sum_squares", DType::F32);
    Pair& x = k.input("x", len, false);
    const double want = cpu().sum_squares(x.c()), got = gpu().sum_squares(x.g());
    Err e;
    e.max_abs = std::fabs(got - want);
    e.max_rel = e.max_abs / std::max(std::fabs(want), 1e-300);
    e.nonfinite = std::isfinite(got) ? 0 : 1;
    k.report("sum_squares.n" + std::to_string(len), e, "result");
  }
}

}  // namespace
}  // namespace cr

// Exit 77 (skipped) without a usable GPU; --probe only asks; --self-test-on-cpu: see dtypes().
int main(int argc, char** argv) {
  const bool probe = argc > 1 && std::strcmp(argv[1], "--probe") == 0;
  cr::g_self_test = argc > 1 && std::strcmp(argv[1], "--self-test-on-cpu") == 0;
  if (cr::g_self_test) {
    cr::g_gpu = &cr::cpu_backend();
    cr::g_seed = 12345;
    argv[1] = argv[0];  // not a gtest flag
    testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
  }
  if (!cr::cuda_available()) {
    std::printf("test_gpu_ops: skipped: %s\n",
                cr::cuda_device_count() == 0
                    ? "no usable GPU (this binary has no CUDA backend, or no driver/device is visible)"
                    : "the CUDA backend is not available");
    return 77;
  }
  if (probe) {
    std::printf("test_gpu_ops: %d GPU(s) usable\n", cr::cuda_device_count());
    return 0;
  }
  try {
    cr::g_gpu = &cr::cuda_backend(0);
  } catch (const std::exception& e) {
    std::printf("test_gpu_ops: FAIL: cuda_backend(0): %s\n", e.what());
    return 1;
  }
  const char* s = std::getenv("CR_GPU_TEST_SEED");
  cr::g_seed = s ? std::strtoull(s, nullptr, 10) : std::random_device{}();
  std::printf("test_gpu_ops: seed %llu (repeat with CR_GPU_TEST_SEED=%llu)\n",
              (unsigned long long)cr::g_seed, (unsigned long long)cr::g_seed);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
