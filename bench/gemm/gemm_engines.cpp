// gemm_engines: fp32 GEMM engine benchmark on the GEMM shapes of a GPT-2 124M training step.
//
// One source, one executable per library (compiled with exactly one of CR_GEMM_OPENBLAS,
// CR_GEMM_BLIS, CR_GEMM_DNNL): OpenBLAS and BLIS both export cblas_sgemm/sgemm_, so they must
// never share a process, or the dynamic linker silently picks one for both.
//
// Every engine is driven through the same row-major interface as cr::cpu::gemm
// (core/backend/cpu/gemm.h):  C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C.
//
// Modes (see bench/gemm/README.md; bench/gemm/run.sh drives them all):
//   default          correctness check, then the GPT-2 shape table and the whole-step ceiling
//   --threads-check  correctness check, then threading behaviour: does the engine honour
//                    OMP_NUM_THREADS, how many OS threads exist, what happens when it is called
//                    inside our own `#pragma omp parallel` region (attention's per-head GEMMs),
//                    and what alternating with our `#pragma omp parallel for` loops costs.
// Options: --engine NAME (dnnl binary: dnnl_sgemm | dnnl_matmul), --label TEXT, --tsv FILE
//          (append machine-readable rows), --quick (N=256 shapes only, no 1-thread row),
//          --min-reps R (default 5), --min-time S (seconds per shape, default 0.2),
//          --shape M,N,K,TA,TB (time just that GEMM, e.g. 64,64,64,0,1; with --nested: one
//          independent copy per OpenMP thread inside our parallel region, as attention does).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <iterator>
#include <tuple>
#include <vector>

#if (defined(CR_GEMM_OPENBLAS) + defined(CR_GEMM_BLIS) + defined(CR_GEMM_DNNL)) != 1
#error "define exactly one of CR_GEMM_OPENBLAS, CR_GEMM_BLIS, CR_GEMM_DNNL"
#endif

#if defined(CR_GEMM_OPENBLAS)
#include <cblas.h>
#elif defined(CR_GEMM_BLIS)
#include <blis.h>
#elif defined(CR_GEMM_DNNL)
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

// ---- engines ---------------------------------------------------------------------------------

struct Engine {
  virtual ~Engine() = default;
  virtual std::string name() const = 0;
  virtual std::string info() const = 0;  // library version, the kernel/ISA it dispatched to
  // Row-major C[M,N] = alpha * op(A) * op(B) + beta * C, as cr::cpu::gemm.
  virtual void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                    const float* B, int ldb, float beta, float* C, int ldc) = 0;
  // Thread count for calls made outside a parallel region.
  virtual void set_threads(int n) { omp_set_num_threads(n); }
};

#if defined(CR_GEMM_OPENBLAS)
// The OpenMP build takes omp_get_max_threads() at each call (outside a parallel region) and
// runs single-threaded inside one.
struct OpenBlasEngine : Engine {
  std::string name() const override { return "openblas"; }
  std::string info() const override {
    return std::string("core=") + openblas_get_corename() + " | " + openblas_get_config();
  }
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void set_threads(int n) override {
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
  }
};
#endif

#if defined(CR_GEMM_BLIS)
// BLIS's typed API (bli_sgemm): general strides, so row-major is rs=ld, cs=1 and a transpose is
// a flag. BLIS reads BLIS_NUM_THREADS, else OMP_NUM_THREADS, once at init; with neither set it
// runs on ONE thread, so a backend must call bli_thread_set_num_threads itself.
struct BlisEngine : Engine {
  std::string name() const override { return "blis"; }
  std::string info() const override {
    const char* at = std::getenv("BLIS_ARCH_TYPE");
    return std::string("arch=") + bli_arch_string(bli_arch_query_id()) + " | BLIS " +
           bli_info_get_version_str() + (bli_info_get_enable_openmp() ? " openmp" : "") +
           (bli_info_get_enable_pthreads() ? " pthreads" : "") +
           " | BLIS_ARCH_TYPE=" + (at ? at : "(unset)") +
           " | threads(init)=" + std::to_string((long)bli_thread_get_num_threads());
  }
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override {
    bli_sgemm(ta ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, tb ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
              M, N, K, &alpha, const_cast<float*>(A), lda, 1, const_cast<float*>(B), ldb, 1,
              &beta, C, ldc, 1);
  }
  void set_threads(int n) override {
    omp_set_num_threads(n);
    bli_thread_set_num_threads(n);
  }
};
#endif

#if defined(CR_GEMM_DNNL)
const char* dnnl_isa_name(dnnl_cpu_isa_t isa) {
  switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}
std::string dnnl_info() {
  const dnnl_version_t* v = dnnl_version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch) + " isa=" + dnnl_isa_name(dnnl_get_effective_cpu_isa()) +
         (v->cpu_runtime == DNNL_RUNTIME_OMP ? " runtime=OpenMP" : " runtime=other");
}

// dnnl_sgemm: row-major BLAS-like call, 'N'/'T' flags; takes omp_get_max_threads() per call.
struct DnnlSgemmEngine : Engine {
  std::string name() const override { return "dnnl_sgemm"; }
  std::string info() const override { return dnnl_info(); }
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override {
    dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                                  beta, C, ldc);
    if (st != dnnl_success) {
      std::fprintf(stderr, "dnnl_sgemm failed: %d\n", (int)st);
      std::exit(1);
    }
  }
};

// The matmul primitive, one per (shape, transposes, leading dims, alpha, beta, threads, nested),
// built on first use and cached: creation is not timed (warm-up pays it), as a backend would
// cache it. Transposes are expressed as strides; alpha as output scales, beta as a sum post-op.
// Concurrent calls (our omp loops calling it per head) need care: Debian's oneDNN is built
// without DNNL_ENABLE_CONCURRENT_EXEC, so the default ("library") scratchpad is one global
// buffer and two threads executing at once corrupt each other's results. Hence a user
// scratchpad per thread, a stream per thread, and a locked cache.
struct DnnlMatmulEngine : Engine {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  using Key = std::tuple<bool, bool, int, int, int, int, int, int, float, float, int, bool>;
  struct Entry {
    dnnl::matmul prim;
    dnnl::memory::desc scratch_md;
  };
  std::map<Key, Entry> cache;
  std::mutex mu;
  std::string impl;
  std::string name() const override { return "dnnl_matmul"; }
  std::string info() const override { return dnnl_info() + " impl=" + (impl.empty() ? "?" : impl); }
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override {
    using dt = dnnl::memory::data_type;
    using dims = dnnl::memory::dims;
    dnnl::memory::desc a_md(dims{M, K}, dt::f32, ta ? dims{1, lda} : dims{lda, 1});
    dnnl::memory::desc b_md(dims{K, N}, dt::f32, tb ? dims{1, ldb} : dims{ldb, 1});
    dnnl::memory::desc c_md(dims{M, N}, dt::f32, dims{ldc, 1});
    Key key{ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, omp_get_max_threads(),
            (bool)omp_in_parallel()};
    Entry* entry;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = cache.find(key);
      if (it == cache.end()) {
        dnnl::primitive_attr attr;
        attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        if (alpha != 1.f) attr.set_output_scales(0, {alpha});
        if (beta != 0.f) {
          dnnl::post_ops po;
          po.append_sum(beta);
          attr.set_post_ops(po);
        }
        dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, eng);
        impl = pd.impl_info_str();
        it = cache.emplace(key, Entry{dnnl::matmul(pd), pd.scratchpad_desc()}).first;
      }
      entry = &it->second;  // std::map nodes are stable
    }
    thread_local dnnl::stream strm(eng);
    thread_local std::vector<char> scratch;
    if (scratch.size() < entry->scratch_md.get_size()) scratch.resize(entry->scratch_md.get_size());
    dnnl::memory a(a_md, eng, const_cast<float*>(A)), b(b_md, eng, const_cast<float*>(B)),
        c(c_md, eng, C), sp(entry->scratch_md, eng, scratch.data());
    entry->prim.execute(strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c},
                               {DNNL_ARG_SCRATCHPAD, sp}});
    strm.wait();
  }
};
#endif

std::unique_ptr<Engine> make_engine(const std::string& want) {
#if defined(CR_GEMM_OPENBLAS)
  if (want.empty() || want == "openblas") return std::make_unique<OpenBlasEngine>();
#elif defined(CR_GEMM_BLIS)
  if (want.empty() || want == "blis") return std::make_unique<BlisEngine>();
#elif defined(CR_GEMM_DNNL)
  if (want.empty() || want == "dnnl_sgemm") return std::make_unique<DnnlSgemmEngine>();
  if (want == "dnnl_matmul") return std::make_unique<DnnlMatmulEngine>();
#endif
  std::fprintf(stderr, "unknown engine '%s' for this binary\n", want.c_str());
  std::exit(2);
}

// ---- helpers ---------------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;
double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

struct Buf {  // 64-byte aligned float buffer, filled with deterministic values in [-1, 1)
  float* p = nullptr;
  size_t n = 0;
  explicit Buf(size_t count, uint32_t seed = 1) : n(count) {
    p = static_cast<float*>(std::aligned_alloc(64, (count * sizeof(float) + 63) / 64 * 64));
    uint32_t s = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < count; i++) {
      s = s * 1664525u + 1013904223u;
      p[i] = (float)((s >> 8) * (1.0 / 8388608.0)) - 1.f;
    }
  }
  ~Buf() { std::free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

int os_threads() {  // threads of this process right now (our OpenMP pool + any library's own)
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  return -1;
}

// CPU time used by OTHER processes, to flag measurements disturbed by a shared machine:
// busy jiffies of the whole system (/proc/stat) minus this process's (/proc/self/stat).
struct CpuSample {
  long long busy = 0, total = 0, self = 0;
};
CpuSample cpu_sample() {
  CpuSample c;
  std::ifstream st("/proc/stat");
  std::string cpu;
  long long v[8] = {0};
  st >> cpu >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7];
  for (long long x : v) c.total += x;
  c.busy = c.total - v[3] - v[4];  // minus idle, iowait
  std::ifstream ss("/proc/self/stat");
  std::string all((std::istreambuf_iterator<char>(ss)), std::istreambuf_iterator<char>());
  size_t p = all.rfind(')');  // fields after the command name; utime, stime are 14, 15
  if (p != std::string::npos) {
    std::string rest = all.substr(p + 2);
    std::vector<std::string> f;
    size_t a = 0, b;
    while ((b = rest.find(' ', a)) != std::string::npos && f.size() < 15) {
      f.push_back(rest.substr(a, b - a));
      a = b + 1;
    }
    if (f.size() >= 13) c.self = std::atoll(f[11].c_str()) + std::atoll(f[12].c_str());
  }
  return c;
}
// Fraction of the machine's CPU time spent by other processes between two samples.
double foreign_load(const CpuSample& a, const CpuSample& b) {
  long long total = b.total - a.total;
  if (total <= 0) return 0;
  return std::max(0.0, double((b.busy - a.busy) - (b.self - a.self)) / total);
}

// Waits (at most max_s seconds) until other processes use under 10% of the CPU time over
// 0.5 s. Returns the last measured share.
double wait_quiet(double max_s = 30) {
  double t0 = now_s(), f = 0;
  do {
    CpuSample a = cpu_sample();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    f = foreign_load(a, cpu_sample());
    if (f < 0.10) break;
  } while (now_s() - t0 < max_s);
  return f;
}

// Element (i,j) of op(X) for a row-major X with leading dimension ld.
inline double at(const float* X, int ld, bool t, int i, int j) {
  return t ? X[(size_t)j * ld + i] : X[(size_t)i * ld + j];
}

// Checks engine against a double-precision reference on a ragged shape with padded leading
// dimensions: all four transpose cases, beta 0 and 1, and one alpha/beta pair. Also checks that
// the padding columns of C are left alone. Returns the number of failures.
int check_correctness(Engine& e, bool quiet = false) {
  const int M = 67, N = 45, K = 131, pad = 3;
  int fails = 0;
  double worst = 0;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (auto [alpha, beta] : {std::pair{1.f, 0.f}, {1.f, 1.f}, {0.5f, 0.25f}}) {
        int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
        int lda = ac + pad, ldb = bc + pad, ldc = N + pad;
        Buf A((size_t)ar * lda, 11), B((size_t)br * ldb, 12), C((size_t)M * ldc, 13);
        std::vector<float> C0(C.p, C.p + C.n);
        e.gemm(ta, tb, M, N, K, alpha, A.p, lda, B.p, ldb, beta, C.p, ldc);
        double err = 0, scale = 0;
        bool pad_ok = true;
        for (int i = 0; i < M; i++) {
          for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += at(A.p, lda, ta, i, k) * at(B.p, ldb, tb, k, j);
            double ref = alpha * s + beta * (double)C0[(size_t)i * ldc + j];
            err = std::max(err, std::fabs(ref - C.p[(size_t)i * ldc + j]));
            scale = std::max(scale, std::fabs(ref));
          }
          for (int j = N; j < ldc; j++)
            if (C.p[(size_t)i * ldc + j] != C0[(size_t)i * ldc + j]) pad_ok = false;
        }
        double rel = err / scale;
        worst = std::max(worst, rel);
        if (!(rel < 1e-5) || !pad_ok) {
          fails++;
          std::printf("  FAIL %s%s alpha=%g beta=%g: max rel err %.3g%s\n", ta ? "T" : "N",
                      tb ? "T" : "N", alpha, beta, rel, pad_ok ? "" : ", wrote into C padding");
        }
      }
  if (!quiet)
    std::printf("correctness %dx%dx%d (NN,NT,TN,TT x 3 alpha/beta, padded ld): %s "
                "(worst rel err %.2g)\n",
                M, N, K, fails ? "FAILED" : "ok", worst);
  return fails;
}

// One GEMM of the step: the shape, and how many times a training step runs it.
struct Op {
  std::string layer, kind;  // kind: fwd | dinp | dW
  bool ta, tb;
  int M, N, K, lda, ldb, ldc;
  float beta;
  int count;
  double flops() const { return 2.0 * M * N * K; }
};

// The three GEMMs of a linear layer out[rows,OC] = inp[rows,C] @ W[OC,C]^T (as matmul.cpp).
std::vector<Op> layer_ops(const std::string& layer, int rows, int C, int OC, int count) {
  return {
      {layer, "fwd", false, true, rows, OC, C, C, C, OC, 0.f, count},     // out = inp @ W^T
      {layer, "dinp", false, false, rows, C, OC, OC, C, C, 0.f, count},   // dinp = dout @ W
      {layer, "dW", true, false, OC, C, rows, OC, C, C, 1.f, count},      // dW += dout^T @ inp
  };
}

std::vector<Op> gpt2_step_ops(int rows) {
  const int L = 12, C = 768, Vp = 50304;
  std::vector<Op> ops;
  for (auto [name, c, oc, cnt] : {std::tuple{"qkv", C, 3 * C, L}, {"attproj", C, C, L},
                                   {"fc", C, 4 * C, L}, {"fcproj", 4 * C, C, L},
                                   {"lmhead", C, Vp, 1}})
    for (auto& op : layer_ops(name, rows, c, oc, cnt)) ops.push_back(op);
  return ops;
}

struct Timing {
  double median_s;
  int reps;
  double foreign = 0;  // share of CPU time other processes used meanwhile (0..1)
  int attempts = 1;
};

// Warm up, then time single calls until min_reps calls and min_time seconds; median.
Timing time_op_once(Engine& e, const Op& op, const float* A, const float* B, float* C,
                    int min_reps, double min_time) {
  double t0 = now_s();
  e.gemm(op.ta, op.tb, op.M, op.N, op.K, 1.f, A, op.lda, B, op.ldb, op.beta, C, op.ldc);
  if (now_s() - t0 < 0.05)  // a second warm-up call where it is cheap
    e.gemm(op.ta, op.tb, op.M, op.N, op.K, 1.f, A, op.lda, B, op.ldb, op.beta, C, op.ldc);
  std::vector<double> ts;
  double total = 0;
  while ((int)ts.size() < min_reps || (total < min_time && ts.size() < 100000)) {
    double s = now_s();
    e.gemm(op.ta, op.tb, op.M, op.N, op.K, 1.f, A, op.lda, B, op.ldb, op.beta, C, op.ldc);
    double d = now_s() - s;
    ts.push_back(d);
    total += d;
  }
  std::sort(ts.begin(), ts.end());
  size_t n = ts.size();
  double med = n % 2 ? ts[n / 2] : 0.5 * (ts[n / 2 - 1] + ts[n / 2]);
  return {med, (int)n};
}

// time_op_once, repeated (after a pause) while other processes took more than 10% of the CPU
// time, at most 3 attempts; the fastest attempt counts (interference only ever slows down).
Timing time_op(Engine& e, const Op& op, const float* A, const float* B, float* C, int min_reps,
               double min_time) {
  Timing best{1e30, 0, 1.0, 0};
  for (int attempt = 1; attempt <= 3; attempt++) {
    if (attempt > 1) wait_quiet();
    CpuSample s0 = cpu_sample();
    Timing t = time_op_once(e, op, A, B, C, min_reps, min_time);
    t.foreign = foreign_load(s0, cpu_sample());
    if (t.median_s < best.median_s) best = t;
    best.attempts = attempt;
    if (t.foreign <= 0.10) break;
  }
  return best;
}

struct Options {
  std::string engine, label, tsv;
  bool quick = false, threads_check = false, nested = false;
  std::string shape;
  int min_reps = 5;
  double min_time = 0.2;
};

FILE* open_tsv(const Options& o) {
  if (o.tsv.empty()) return nullptr;
  FILE* f = std::fopen(o.tsv.c_str(), "a");
  if (!f) {
    std::perror(o.tsv.c_str());
    std::exit(1);
  }
  return f;
}

// Times every GEMM of one step at `rows` rows; prints per-shape rows and the step ceiling.
void bench_step(Engine& e, const Options& o, int rows, int threads, FILE* tsv,
                const std::string& only_layer = "") {
  e.set_threads(threads);
  double step_flops = 0, step_time = 0;
  std::string cur_layer;
  std::unique_ptr<Buf> inp, W, dout, out, dinp, dW;
  for (const Op& op : gpt2_step_ops(rows)) {
    if (!only_layer.empty() && op.layer != only_layer) continue;
    if (op.layer != cur_layer) {  // fresh buffers per layer: inp[rows,C], W[OC,C], dout[rows,OC]
      cur_layer = op.layer;
      int C = op.kind == "fwd" ? op.K : op.N;
      int OC = op.kind == "fwd" ? op.N : op.K;
      inp.reset();
      W.reset();
      dout.reset();
      out.reset();
      dinp.reset();
      dW.reset();
      inp = std::make_unique<Buf>((size_t)rows * C, 1);
      W = std::make_unique<Buf>((size_t)OC * C, 2);
      dout = std::make_unique<Buf>((size_t)rows * OC, 3);
      out = std::make_unique<Buf>((size_t)rows * OC, 4);
      dinp = std::make_unique<Buf>((size_t)rows * C, 5);
      dW = std::make_unique<Buf>((size_t)OC * C, 6);
    }
    const float *A, *B;
    float* Cm;
    if (op.kind == "fwd") A = inp->p, B = W->p, Cm = out->p;
    else if (op.kind == "dinp") A = dout->p, B = W->p, Cm = dinp->p;
    else A = dout->p, B = inp->p, Cm = dW->p;
    Timing t = time_op(e, op, A, B, Cm, o.min_reps, o.min_time);
    double gf = op.flops() / t.median_s * 1e-9;
    step_flops += op.flops() * op.count;
    step_time += t.median_s * op.count;
    std::printf("  %-8s %-4s %s%s M=%-5d N=%-5d K=%-5d thr=%d  %9.3f ms  %7.1f GFLOP/s  "
                "(%d reps, other procs %2.0f%% cpu%s)\n",
                op.layer.c_str(), op.kind.c_str(), op.ta ? "T" : "N", op.tb ? "T" : "N", op.M,
                op.N, op.K, threads, t.median_s * 1e3, gf, t.reps, 100 * t.foreign,
                t.attempts > 1 ? (", " + std::to_string(t.attempts) + " attempts").c_str() : "");
    std::fflush(stdout);
    if (tsv)
      std::fprintf(tsv, "%s\t%s\trows=%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%.9g\t%.6g\t%.3f\n",
                   o.label.c_str(), e.name().c_str(), rows, op.layer.c_str(), op.kind.c_str(),
                   op.M, op.N, op.K, threads, op.count, t.median_s, gf, t.foreign);
  }
  if (only_layer.empty()) {
    std::printf("  => whole-step sgemm ceiling, rows=%d, %d thr: %.1f GFLOP/s (%.1f GFLOP in %.3f s)\n",
                rows, threads, step_flops / step_time * 1e-9, step_flops * 1e-9, step_time);
    if (tsv)
      std::fprintf(tsv, "%s\t%s\trows=%d\tSTEP\tall\t0\t0\t0\t%d\t1\t%.9g\t%.6g\t-1\n", o.label.c_str(),
                   e.name().c_str(), rows, threads, step_time, step_flops / step_time * 1e-9);
  }
}

// ---- threading checks ------------------------------------------------------------------------

// Our own kind of loop: an elementwise pass like the residual add, over n floats.
void our_loop(float* x, const float* y, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] + y[i];
}

void threads_check(Engine& e, const Options& o) {
  const char* env = std::getenv("OMP_NUM_THREADS");
  int hw = omp_get_max_threads();
  std::printf("OMP_NUM_THREADS=%s  omp_get_max_threads()=%d  OS threads at start=%d\n",
              env ? env : "(unset)", hw, os_threads());

  // (1) Does it honour the thread count it was given through the environment? No set_threads
  // here: the engine runs exactly as a backend that only relies on OMP_NUM_THREADS would.
  const int M = 2048, N = 3072, K = 768;  // fc forward at B*T=2048
  Buf A((size_t)M * K, 1), B((size_t)N * K, 2), C((size_t)M * N, 3);
  Op fc{"fc", "fwd", false, true, M, N, K, K, K, N, 0.f, 1};
  wait_quiet();
  Timing t = time_op(e, fc, A.p, B.p, C.p, o.min_reps, o.min_time);
  double gf_env = fc.flops() / t.median_s * 1e-9;
  std::printf("[env]    fc fwd 2048x3072x768 as the environment says: %7.1f GFLOP/s; "
              "OS threads now %d (others %.0f%% cpu)\n", gf_env, os_threads(), 100 * t.foreign);
  e.set_threads(1);
  double gf1 = fc.flops() / time_op(e, fc, A.p, B.p, C.p, o.min_reps, o.min_time).median_s * 1e-9;
  e.set_threads(2);  // from here on: 2 threads, set explicitly, as a backend would
  double gf2 = fc.flops() / time_op(e, fc, A.p, B.p, C.p, o.min_reps, o.min_time).median_s * 1e-9;
  std::printf("[set]    same, explicitly 1 thread: %7.1f GFLOP/s, 2 threads: %7.1f GFLOP/s "
              "(env run used ~%.1f threads' worth); OS threads now %d\n",
              gf1, gf2, gf_env / gf1, os_threads());

  // (2) Called from inside our parallel region, one independent GEMM per thread (as attention
  // does per (batch, head)): must run on the calling thread only, and still be correct.
  const int nthr = 2, T = 256, hs = 64, heads = 24;  // B*NH blocks of att = q @ k^T
  std::vector<std::unique_ptr<Buf>> q, k, att;
  for (int h = 0; h < heads; h++) {
    q.push_back(std::make_unique<Buf>((size_t)T * hs, 100 + h));
    k.push_back(std::make_unique<Buf>((size_t)T * hs, 200 + h));
    att.push_back(std::make_unique<Buf>((size_t)T * T, 300 + h));
  }
  auto heads_pass = [&](bool nested) {
    double s = now_s();
    if (nested) {
#pragma omp parallel for num_threads(nthr) schedule(static)
      for (int h = 0; h < heads; h++)
        e.gemm(false, true, T, T, hs, 0.125f, q[h]->p, hs, k[h]->p, hs, 0.f, att[h]->p, T);
    } else {
      for (int h = 0; h < heads; h++)
        e.gemm(false, true, T, T, hs, 0.125f, q[h]->p, hs, k[h]->p, hs, 0.f, att[h]->p, T);
    }
    return now_s() - s;
  };
  heads_pass(false);
  heads_pass(true);
  wait_quiet();
  CpuSample c0 = cpu_sample();
  double best_serial = 1e9, best_nested = 1e9;
  for (int r = 0; r < 10; r++) {
    best_serial = std::min(best_serial, heads_pass(false));
    best_nested = std::min(best_nested, heads_pass(true));
  }
  // Verify one head against the reference after the nested run.
  double err = 0;
  for (int i = 0; i < T; i += 17)
    for (int j = 0; j < T; j += 13) {
      double s = 0;
      for (int c = 0; c < hs; c++) s += (double)q[5]->p[i * hs + c] * k[5]->p[j * hs + c];
      err = std::max(err, std::fabs(0.125 * s - att[5]->p[i * T + j]));
    }
  int nested_fails = 0;
  {  // ragged correctness check with each of the 2 threads calling concurrently
#pragma omp parallel num_threads(nthr) reduction(+ : nested_fails)
    nested_fails += check_correctness(e, true);
  }
  std::printf("[nested] %d x (256x256x64) att GEMMs: one after another, library-threaded "
              "%.2f ms; inside our omp parallel for (%d thr) %.2f ms; abs err %.2g%s; concurrent "
              "ragged check: %s; OS threads now %d (others %.0f%% cpu)\n",
              heads, best_serial * 1e3, nthr, best_nested * 1e3, err,
              err > 1e-4 ? " FAILED (wrong results)" : "",
              nested_fails ? "FAILED" : "ok", os_threads(), 100 * foreign_load(c0, cpu_sample()));

  // (3) Alternating with our own omp loops (forward pass pattern: gemm, elementwise, gemm ...).
  const size_t n = (size_t)256 * 768;  // one activation at B=4,T=64, C=768
  Buf x(n, 7), y(n, 17);
  const int m2 = 256, n2 = 768, k2 = 768;
  Buf A2((size_t)m2 * k2, 8), B2((size_t)n2 * k2, 9), C2((size_t)m2 * n2, 10);
  auto g = [&] { e.gemm(false, true, m2, n2, k2, 1.f, A2.p, k2, B2.p, k2, 0.f, C2.p, n2); };
  const int iters = 200;
  for (int i = 0; i < 10; i++) g(), our_loop(x.p, y.p, n);
  wait_quiet();
  c0 = cpu_sample();
  double tg = 1e9, tl = 1e9, tboth = 1e9;
  for (int r = 0; r < 3; r++) {
    double s = now_s();
    for (int i = 0; i < iters; i++) g();
    tg = std::min(tg, now_s() - s);
    s = now_s();
    for (int i = 0; i < iters; i++) our_loop(x.p, y.p, n);
    tl = std::min(tl, now_s() - s);
    s = now_s();
    for (int i = 0; i < iters; i++) g(), our_loop(x.p, y.p, n);
    tboth = std::min(tboth, now_s() - s);
  }
  std::printf("[interleave] %d x {256x768x768 gemm; omp loop over %zu floats}: gemm alone %.3f ms, "
              "loop alone %.3f ms, alternating %.3f ms per pair (%+.1f%%); OS threads now %d "
              "(others %.0f%% cpu)\n",
              iters, n, tg / iters * 1e3, tl / iters * 1e3, tboth / iters * 1e3,
              100.0 * (tboth - tg - tl) / (tg + tl), os_threads(),
              100 * foreign_load(c0, cpu_sample()));
}

// --shape: one GEMM, either library-threaded or (--nested) one copy per thread inside our own
// parallel region; reports the aggregate GFLOP/s.
void shape_bench(Engine& e, const Options& o) {
  int M, N, K, ta, tb;
  if (std::sscanf(o.shape.c_str(), "%d,%d,%d,%d,%d", &M, &N, &K, &ta, &tb) != 5) {
    std::fprintf(stderr, "--shape wants M,N,K,TA,TB\n");
    std::exit(2);
  }
  int lda = ta ? M : K, ldb = tb ? K : N;
  int nthr = o.nested ? omp_get_max_threads() : 1;
  std::vector<std::unique_ptr<Buf>> A, B, C;
  for (int t = 0; t < nthr; t++) {
    A.push_back(std::make_unique<Buf>((size_t)M * K, 1 + t));
    B.push_back(std::make_unique<Buf>((size_t)K * N, 50 + t));
    C.push_back(std::make_unique<Buf>((size_t)M * N, 99 + t));
  }
  auto call = [&](int t) {
    e.gemm(ta, tb, M, N, K, 1.f, A[t]->p, lda, B[t]->p, ldb, 0.f, C[t]->p, N);
  };
  const int inner = std::max(1, (int)(2e7 / (2.0 * M * N * K)));  // ~20 MFLOP per sample
  auto sample = [&] {
    double s = now_s();
    if (o.nested) {
#pragma omp parallel num_threads(nthr)
      for (int i = 0; i < inner; i++) call(omp_get_thread_num());
    } else {
      for (int i = 0; i < inner; i++) call(0);
    }
    return (now_s() - s) / inner;
  };
  for (int i = 0; i < 3; i++) sample();
  wait_quiet();
  std::vector<double> ts;
  double total = 0;
  while ((int)ts.size() < o.min_reps || total < o.min_time) ts.push_back(sample()), total += ts.back() * inner;
  std::sort(ts.begin(), ts.end());
  double t = ts[ts.size() / 2];
  std::printf("  %dx%dx%d %s%s %s: %.2f us per call, %.1f GFLOP/s aggregate\n", M, N, K,
              ta ? "T" : "N", tb ? "T" : "N",
              o.nested ? ("one per thread inside omp parallel, " + std::to_string(nthr) + " thr").c_str()
                       : ("library-threaded, " + std::to_string(omp_get_max_threads()) + " thr").c_str(),
              t * 1e6, 2.0 * M * N * K * nthr / t * 1e-9);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--engine") o.engine = next();
    else if (a == "--label") o.label = next();
    else if (a == "--tsv") o.tsv = next();
    else if (a == "--quick") o.quick = true;
    else if (a == "--threads-check") o.threads_check = true;
    else if (a == "--shape") o.shape = next();
    else if (a == "--nested") o.nested = true;
    else if (a == "--min-reps") o.min_reps = std::max(1, std::atoi(next().c_str()));
    else if (a == "--min-time") o.min_time = std::atof(next().c_str());
    else {
      std::fprintf(stderr, "usage: %s [--engine NAME] [--label TEXT] [--tsv FILE] [--quick] "
                           "[--threads-check] [--min-reps R] [--min-time S]\n", argv[0]);
      return 2;
    }
  }
  auto e = make_engine(o.engine);
  if (o.label.empty()) o.label = e->name();
  // Correctness first: it also forces the library's lazy init, so info() shows the real kernel.
  int fails = check_correctness(*e, true);
  std::printf("== %s [%s]\n   %s\n", o.label.c_str(), e->name().c_str(), e->info().c_str());
  fails = check_correctness(*e);
  if (fails) {
    std::printf("!! %s gives wrong results; its timings are not reported\n", o.label.c_str());
    return 1;
  }
  if (!o.shape.empty()) {
    shape_bench(*e, o);
    return 0;
  }
  if (o.threads_check) {
    threads_check(*e, o);
    return 0;
  }
  FILE* tsv = open_tsv(o);
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) > 0) std::printf("   loadavg at start %.2f\n", load[0]);
  int thr = omp_get_max_threads();
  if (!o.quick) bench_step(*e, o, 2048, thr, tsv);  // GPT-2 124M, B=8, T=256
  bench_step(*e, o, 256, thr, tsv);                 // B=4, T=64
  if (!o.quick) bench_step(*e, o, 2048, 1, tsv, "lmhead");  // the biggest shape on one thread
  if (getloadavg(load, 3) > 0) std::printf("   loadavg at end %.2f\n", load[0]);
  if (tsv) std::fclose(tsv);
  return 0;
}
