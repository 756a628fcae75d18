// The CPU backend: the Backend table over the ops of core/backend/cpu (one file per op). Each
// entry checks its arguments (device, dtype, sizes) and calls the op; the ops themselves stay
// plain pointer functions so tests and benchmarks can call them directly.
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <list>
#include <utility>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/cpu/ops.h"
#include "core/tensor/bf16.h"

namespace cr {

namespace {

class HostAllocator final : public Allocator {
 public:
  Device device() const override { return Device::CPU; }
  void* allocate(size_t bytes) override {
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) CR_THROW("out of memory allocating {} bytes", rounded);
    return p;
  }
  void deallocate(void* p, size_t) noexcept override { std::free(p); }
  // Zeroes the whole 64-byte-rounded allocation (what Buffer always did).
  void zero(void* p, size_t bytes) override { std::memset(p, 0, (bytes + 63) / 64 * 64); }
};

// Argument checks: the view is on the CPU, has the dtype the op computes in, and holds at least
// `need` elements. Empty views are allowed only where the op takes an optional argument.
float* F(const TensorView& v, size_t need, const char* op, const char* arg) {
  if (v.empty()) {
    CR_CHECK(need == 0, "{}: {} is empty, need {} elements", op, arg, need);
    return nullptr;
  }
  CR_CHECK(v.device == Device::CPU, "{}: {} is on {}, the CPU backend needs host memory", op, arg,
           device_name(v.device));
  CR_CHECK(v.dtype == DType::F32, "{}: {} is {}, the CPU backend computes in f32", op, arg,
           dtype_name(v.dtype));
  CR_CHECK(v.numel() >= need, "{}: {} has {} elements, needs {}", op, arg, v.numel(), need);
  return static_cast<float*>(v.data);
}
float* Fopt(const TensorView& v, size_t need, const char* op, const char* arg) {
  return v.empty() ? nullptr : F(v, need, op, arg);
}
const int32_t* I(const TensorView& v, size_t need, const char* op, const char* arg) {
  CR_CHECK(!v.empty() && v.device == Device::CPU && v.dtype == DType::I32 && v.numel() >= need,
           "{}: {} must be {} host i32 elements (got {} {} on {})", op, arg, need, v.numel(),
           dtype_name(v.dtype), device_name(v.device));
  return static_cast<const int32_t*>(v.data);
}
size_t z(int a, int b) { return (size_t)a * (size_t)b; }
// An attention key range [B*T, 2] (backend.h), checked: a bad range would read outside the rows.
const int32_t* key_ranges(const TensorView& v, size_t N, int T, const char* op) {
  if (v.empty()) return nullptr;
  const int32_t* r = I(v, 2 * N, op, "kv_range");
  for (size_t i = 0; i < N; i++) {
    const int t = (int)(i % (size_t)T);
    CR_CHECK(0 <= r[2 * i] && r[2 * i] <= t && t <= r[2 * i + 1] && r[2 * i + 1] < T,
             "{}: kv_range of row {} is [{}, {}], needs lo <= {} <= hi < {}", op, i, r[2 * i],
             r[2 * i + 1], t, T);
  }
  return r;
}
// The embedding rows a (vocabulary-parallel) table must hold: vocab_count of them, at least one.
size_t rows(int vocab_count, int C) {
  return z(std::max(1, vocab_count == INT32_MAX ? 1 : vocab_count), C);
}

// bf16 <-> f32 over n elements (round to nearest even one way, exact the other).
void narrow_bf16(uint16_t* d, const float* s, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(s[i]);
}
void widen_bf16(float* d, const uint16_t* s, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; i++) d[i] = bf16_to_f32(s[i]);
}

// bf16 on the CPU (train.dtype: bf16, and the oracle for the GPU's bf16 ops): an op whose
// tensors are bf16 runs in f32 on converted copies, and its outputs are rounded back to bf16 on
// the way out (round to nearest even): what a GPU kernel that loads bf16, computes in f32 and
// stores bf16 does. Outputs are converted in as well, since some ops accumulate into them or
// write only some columns. Nothing is written back when the op throws. Slow, but a test and
// reference path only: the CPU's own training dtype is fp32.
class Bf16Stage {
 public:
  explicit Bf16Stage(const char* op) : op_(op), exceptions_(std::uncaught_exceptions()) {}
  ~Bf16Stage() {
    if (std::uncaught_exceptions() != exceptions_) return;
    for (Staged& s : staged_)
      if (s.write_back) narrow_bf16(static_cast<uint16_t*>(s.original.data), s.f32.data(), s.f32.size());
  }
  Bf16Stage(const Bf16Stage&) = delete;
  Bf16Stage& operator=(const Bf16Stage&) = delete;
  // out("name", view, "name", view, ...): written by the op; in(...): only read.
  Bf16Stage& out() { return *this; }
  template <class... R>
  Bf16Stage& out(const char* name, TensorView& v, R&&... rest) {
    stage(name, v, true);
    return out(std::forward<R>(rest)...);
  }
  Bf16Stage& in() { return *this; }
  template <class... R>
  Bf16Stage& in(const char* name, TensorView& v, R&&... rest) {
    stage(name, v, false);
    return in(std::forward<R>(rest)...);
  }

 private:
  struct Staged {
    TensorView original;
    std::vector<float> f32;
    bool write_back;
  };
  // Replaces a host bf16 view by an f32 copy of it; anything else is left to the op's checks.
  void stage(const char* name, TensorView& v, bool write_back) {
    if (v.empty()) return;
    // One compute dtype per call (backend.h), as the GPU backend requires: a mix is a bug.
    if (v.dtype == DType::F32 || v.dtype == DType::BF16) {
      if (!seen_) seen_ = true, t_ = v.dtype, first_ = name;
      CR_CHECK(v.dtype == t_, "{}: {} is {} but {} is {}: one compute dtype per call", op_, name,
               dtype_name(v.dtype), first_, dtype_name(t_));
    }
    if (v.dtype != DType::BF16 || v.device != Device::CPU) return;
    Staged& s = staged_.emplace_back(Staged{v, std::vector<float>(v.numel()), write_back});
    widen_bf16(s.f32.data(), static_cast<const uint16_t*>(v.data), s.f32.size());
    v.data = s.f32.data();
    v.dtype = DType::F32;
  }
  const char* op_;
  int exceptions_;
  bool seen_ = false;
  const char* first_ = "";
  DType t_ = DType::F32;
  std::list<Staged> staged_;  // stable addresses: the views point into them
};

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  Device device() const override { return Device::CPU; }
  Allocator& allocator() override { return host_allocator(); }
  void copy(TensorView dst, TensorView src) override {
    CR_CHECK(dst.device == Device::CPU && src.device == Device::CPU && dst.dtype == src.dtype &&
                 dst.numel() == src.numel(),
             "copy: {} {} on {} <- {} {} on {}", dst.numel(), dtype_name(dst.dtype),
             device_name(dst.device), src.numel(), dtype_name(src.dtype), device_name(src.device));
    if (dst.data != src.data && dst.bytes()) std::memmove(dst.data, src.data, dst.bytes());
  }

  void cast(TensorView dst, TensorView src) override {
    CR_CHECK(dst.device == Device::CPU && src.device == Device::CPU &&
                 dst.numel() == src.numel() && dst.dtype != DType::I32 && src.dtype != DType::I32,
             "cast: {} {} on {} <- {} {} on {}", dst.numel(), dtype_name(dst.dtype),
             device_name(dst.device), src.numel(), dtype_name(src.dtype), device_name(src.device));
    if (dst.dtype == src.dtype)
      copy(dst, src);
    else if (dst.dtype == DType::BF16)
      narrow_bf16(static_cast<uint16_t*>(dst.data), static_cast<const float*>(src.data), dst.numel());
    else
      widen_bf16(static_cast<float*>(dst.data), static_cast<const uint16_t*>(src.data), dst.numel());
  }

  void embedding_forward(TensorView out, TensorView tokens, TensorView wte, TensorView wpe, int B,
                         int T, int C, int vocab_start, int vocab_count) override {
    Bf16Stage st(__func__);
    st.out("out", out).in("wte", wte, "wpe", wpe);
    const char* op = "embedding_forward";
    cpu::embedding_forward(F(out, z(B * T, C), op, "out"), I(tokens, z(B, T), op, "tokens"),
                           F(wte, rows(vocab_count, C), op, "wte"), Fopt(wpe, z(T, C), op, "wpe"), B, T, C,
                           vocab_start, vocab_count);
  }
  void embedding_backward(TensorView dwte, TensorView dwpe, TensorView dout, TensorView tokens,
                          int B, int T, int C, int vocab_start, int vocab_count) override {
    Bf16Stage st(__func__);
    st.in("dout", dout);
    const char* op = "embedding_backward";
    cpu::embedding_backward(F(dwte, rows(vocab_count, C), op, "dwte"), Fopt(dwpe, z(T, C), op, "dwpe"),
                            F(dout, z(B * T, C), op, "dout"), I(tokens, z(B, T), op, "tokens"), B,
                            T, C, vocab_start, vocab_count);
  }

  void layernorm_forward(TensorView out, TensorView mean, TensorView rstd, TensorView inp,
                         TensorView weight, TensorView bias, int N, int C, float eps) override {
    Bf16Stage st(__func__);
    st.out("out", out).in("inp", inp, "weight", weight, "bias", bias);
    const char* op = "layernorm_forward";
    cpu::layernorm_forward(F(out, z(N, C), op, "out"), F(mean, N, op, "mean"),
                           F(rstd, N, op, "rstd"), F(inp, z(N, C), op, "inp"),
                           F(weight, C, op, "weight"), F(bias, C, op, "bias"), N, C, eps);
  }
  void layernorm_apply(TensorView out, TensorView inp, TensorView mean, TensorView rstd,
                       TensorView weight, TensorView bias, int N, int C) override {
    Bf16Stage st(__func__);
    st.out("out", out).in("inp", inp, "weight", weight, "bias", bias);
    const char* op = "layernorm_apply";
    cpu::layernorm_apply(F(out, z(N, C), op, "out"), F(inp, z(N, C), op, "inp"),
                         F(mean, N, op, "mean"), F(rstd, N, op, "rstd"),
                         F(weight, C, op, "weight"), F(bias, C, op, "bias"), N, C);
  }
  void residual_layernorm_forward(TensorView x, TensorView out, TensorView mean, TensorView rstd,
                                  TensorView a, TensorView b, TensorView weight, TensorView bias,
                                  int N, int C, float eps) override {
    Bf16Stage st(__func__);
    st.out("x", x, "out", out).in("a", a, "b", b, "weight", weight, "bias", bias);
    const char* op = "residual_layernorm_forward";
    cpu::residual_layernorm_forward(F(x, z(N, C), op, "x"), F(out, z(N, C), op, "out"),
                                    F(mean, N, op, "mean"), F(rstd, N, op, "rstd"),
                                    F(a, z(N, C), op, "a"), F(b, z(N, C), op, "b"),
                                    F(weight, C, op, "weight"), F(bias, C, op, "bias"), N, C, eps);
  }
  void layernorm_backward(TensorView dinp, TensorView dweight, TensorView dbias, TensorView dout,
                          TensorView inp, TensorView weight, TensorView mean, TensorView rstd,
                          int N, int C) override {
    Bf16Stage st(__func__);
    st.out("dinp", dinp).in("dout", dout, "inp", inp, "weight", weight);
    const char* op = "layernorm_backward";
    cpu::layernorm_backward(F(dinp, z(N, C), op, "dinp"), F(dweight, C, op, "dweight"),
                            F(dbias, C, op, "dbias"), F(dout, z(N, C), op, "dout"),
                            F(inp, z(N, C), op, "inp"), F(weight, C, op, "weight"),
                            F(mean, N, op, "mean"), F(rstd, N, op, "rstd"), N, C);
  }
  void rmsnorm_forward(TensorView out, TensorView rstd, TensorView inp, TensorView weight, int N,
                       int C, float eps) override {
    Bf16Stage st(__func__);
    st.out("out", out).in("inp", inp, "weight", weight);
    const char* op = "rmsnorm_forward";
    cpu::rmsnorm_forward(F(out, z(N, C), op, "out"), F(rstd, N, op, "rstd"),
                         F(inp, z(N, C), op, "inp"), F(weight, C, op, "weight"), N, C, eps);
  }
  void rmsnorm_apply(TensorView out, TensorView inp, TensorView rstd, TensorView weight, int N,
                     int C) override {
    Bf16Stage st(__func__);
    st.out("out", out).in("inp", inp, "weight", weight);
    const char* op = "rmsnorm_apply";
    cpu::rmsnorm_apply(F(out, z(N, C), op, "out"), F(inp, z(N, C), op, "inp"),
                       F(rstd, N, op, "rstd"), F(weight, C, op, "weight"), N, C);
  }
  void residual_rmsnorm_forward(TensorView x, TensorView out, TensorView rstd, TensorView a,
                                TensorView b, TensorView weight, int N, int C,
                                float eps) override {
    Bf16Stage st(__func__);
    st.out("x", x, "out", out).in("a", a, "b", b, "weight", weight);
    const char* op = "residual_rmsnorm_forward";
    cpu::residual_rmsnorm_forward(F(x, z(N, C), op, "x"), F(out, z(N, C), op, "out"),
                                  F(rstd, N, op, "rstd"), F(a, z(N, C), op, "a"),
                                  F(b, z(N, C), op, "b"), F(weight, C, op, "weight"), N, C, eps);
  }
  void rmsnorm_backward(TensorView dinp, TensorView dweight, TensorView dout, TensorView inp,
                        TensorView weight, TensorView rstd, int N, int C) override {
    Bf16Stage st(__func__);
    st.out("dinp", dinp).in("dout", dout, "inp", inp, "weight", weight);
    const char* op = "rmsnorm_backward";
    cpu::rmsnorm_backward(F(dinp, z(N, C), op, "dinp"), F(dweight, C, op, "dweight"),
                          F(dout, z(N, C), op, "dout"), F(inp, z(N, C), op, "inp"),
                          F(weight, C, op, "weight"), F(rstd, N, op, "rstd"), N, C);
  }

  void matmul_forward(TensorView out, TensorView inp, TensorView weight, TensorView bias, int N,
                      int C, int OC, int ldo) override {
    Bf16Stage st(__func__);
    st.out("out", out).in("inp", inp, "weight", weight, "bias", bias);
    const char* op = "matmul_forward";
    if (ldo <= 0) ldo = OC;
    CR_CHECK(ldo >= OC, "{}: ldo {} < OC {}", op, ldo, OC);
    cpu::matmul_forward(F(out, N > 0 ? (size_t)(N - 1) * ldo + OC : 0, op, "out"),
                        F(inp, z(N, C), op, "inp"), F(weight, z(OC, C), op, "weight"),
                        Fopt(bias, OC, op, "bias"), N, C, OC, ldo);
  }
  void matmul_backward(TensorView dinp, TensorView dweight, TensorView dbias, TensorView dout,
                       TensorView inp, TensorView weight, int N, int C, int OC, int ldd,
                       bool accumulate_dinp) override {
    Bf16Stage st(__func__);
    st.out("dinp", dinp).in("dout", dout, "inp", inp, "weight", weight);
    const char* op = "matmul_backward";
    if (ldd <= 0) ldd = OC;
    CR_CHECK(ldd >= OC, "{}: ldd {} < OC {}", op, ldd, OC);
    cpu::matmul_backward(Fopt(dinp, z(N, C), op, "dinp"), F(dweight, z(OC, C), op, "dweight"),
                         Fopt(dbias, OC, op, "dbias"),
                         F(dout, N > 0 ? (size_t)(N - 1) * ldd + OC : 0, op, "dout"),
                         F(inp, z(N, C), op, "inp"), F(weight, z(OC, C), op, "weight"), N, C, OC,
                         ldd, accumulate_dinp);
  }

  void attention_forward(TensorView out, TensorView lse, TensorView qkv, int B, int T, int H,
                         int Hkv, int hs, TensorView kv_range) override {
    Bf16Stage st(__func__);
    st.out("out", out).in("qkv", qkv);
    const char* op = "attention_forward";
    CR_CHECK(Hkv > 0 && H % Hkv == 0, "{}: H {} is not a multiple of Hkv {}", op, H, Hkv);
    const size_t N = z(B, T);
    cpu::attention_forward(F(out, N * H * hs, op, "out"), F(lse, N * H, op, "lse"),
                           F(qkv, N * (H + 2 * Hkv) * hs, op, "qkv"), B, T, H, Hkv, hs,
                           key_ranges(kv_range, N, T, op));
  }
  void attention_backward(TensorView dqkv, TensorView dout, TensorView qkv, TensorView out,
                          TensorView lse, int B, int T, int H, int Hkv, int hs,
                          TensorView kv_range) override {
    Bf16Stage st(__func__);
    st.out("dqkv", dqkv).in("dout", dout, "qkv", qkv, "out", out);
    const char* op = "attention_backward";
    CR_CHECK(Hkv > 0 && H % Hkv == 0, "{}: H {} is not a multiple of Hkv {}", op, H, Hkv);
    const size_t N = z(B, T), ld = (size_t)(H + 2 * Hkv) * hs;
    cpu::attention_backward(F(dqkv, N * ld, op, "dqkv"), F(dout, N * H * hs, op, "dout"),
                            F(qkv, N * ld, op, "qkv"), F(out, N * H * hs, op, "out"),
                            F(lse, N * H, op, "lse"), B, T, H, Hkv, hs,
                            key_ranges(kv_range, N, T, op));
  }
  void attention_decode(TensorView out, TensorView q, TensorView kcache, TensorView vcache,
                        int len, int H, int Hkv, int hs) override {
    Bf16Stage st(__func__);
    st.out("out", out).in("q", q, "kcache", kcache, "vcache", vcache);
    const char* op = "attention_decode";
    CR_CHECK(Hkv > 0 && H % Hkv == 0 && len > 0, "{}: H {} Hkv {} len {}", op, H, Hkv, len);
    cpu::attention_decode(F(out, z(H, hs), op, "out"), F(q, z(H, hs), op, "q"),
                          F(kcache, z(len, Hkv * hs), op, "kcache"),
                          F(vcache, z(len, Hkv * hs), op, "vcache"), len, H, Hkv, hs);
  }
  void attention_decode_rows(TensorView out, TensorView qkv, TensorView kcache, TensorView vcache,
                             int B, int T, int pos0, bool bidirectional, int cache_len, int ld,
                             int H, int Hkv, int hs) override {
    if (out.dtype != DType::F32 || qkv.dtype != DType::F32 || kcache.dtype != DType::F32)
      return Backend::attention_decode_rows(out, qkv, kcache, vcache, B, T, pos0, bidirectional,
                                            cache_len, ld, H, Hkv, hs);  // bf16: staged per row
    const char* op = "attention_decode_rows";
    CR_CHECK(Hkv > 0 && H % Hkv == 0 && pos0 + T <= cache_len && ld >= (H + 2 * Hkv) * hs,
             "{}: H {} Hkv {} pos0 {} T {} cache_len {} ld {}", op, H, Hkv, pos0, T, cache_len, ld);
    const size_t q = (size_t)H * hs, seq = (size_t)cache_len * Hkv * hs, N = (size_t)B * T;
    float* o = F(out, N * q, op, "out");
    const float* x = F(qkv, (N - 1) * ld + q, op, "qkv");
    const float* k = F(kcache, B * seq, op, "kcache");
    const float* v = F(vcache, B * seq, op, "vcache");
    // One row per iteration, each computed exactly as attention_decode computes it alone.
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < N; r++) {
      const size_t b = r / T, t = r % T;
      cpu::attention_decode(o + r * q, x + r * ld, k + b * seq, v + b * seq,
                            pos0 + (bidirectional ? T : (int)t + 1), H, Hkv, hs);
    }
  }
  void rope_forward(TensorView x, int B, int T, int ld, int n_heads, int hs, float theta,
                    int pos0) override {
    Bf16Stage st(__func__);
    st.out("x", x);
    CR_CHECK(hs % 2 == 0 && n_heads * hs <= ld, "rope_forward: hs {} n_heads {} ld {}", hs,
             n_heads, ld);
    cpu::rope_forward(F(x, z(B * T, ld), "rope_forward", "x"), B, T, ld, n_heads, hs, theta, pos0);
  }
  void rope_backward(TensorView dx, int B, int T, int ld, int n_heads, int hs, float theta,
                     int pos0) override {
    Bf16Stage st(__func__);
    st.out("dx", dx);
    CR_CHECK(hs % 2 == 0 && n_heads * hs <= ld, "rope_backward: hs {} n_heads {} ld {}", hs,
             n_heads, ld);
    cpu::rope_backward(F(dx, z(B * T, ld), "rope_backward", "dx"), B, T, ld, n_heads, hs, theta,
                       pos0);
  }

  void gelu_forward(TensorView out, TensorView inp, size_t n) override {
    Bf16Stage st(__func__);
    st.out("out", out).in("inp", inp);
    cpu::gelu_forward(F(out, n, "gelu_forward", "out"), F(inp, n, "gelu_forward", "inp"), n);
  }
  void gelu_backward(TensorView dinp, TensorView inp, TensorView dout, size_t n) override {
    Bf16Stage st(__func__);
    st.out("dinp", dinp).in("inp", inp, "dout", dout);
    const char* op = "gelu_backward";
    cpu::gelu_backward(F(dinp, n, op, "dinp"), F(inp, n, op, "inp"), F(dout, n, op, "dout"), n);
  }
  void swiglu_forward(TensorView out, TensorView inp, int N, int Fw) override {
    Bf16Stage st(__func__);
    st.out("out", out).in("inp", inp);
    const char* op = "swiglu_forward";
    cpu::swiglu_forward(F(out, z(N, Fw), op, "out"), F(inp, z(N, 2 * Fw), op, "inp"), N, Fw);
  }
  void swiglu_backward(TensorView dinp, TensorView inp, TensorView dout, int N, int Fw) override {
    Bf16Stage st(__func__);
    st.out("dinp", dinp).in("inp", inp, "dout", dout);
    const char* op = "swiglu_backward";
    cpu::swiglu_backward(F(dinp, z(N, 2 * Fw), op, "dinp"), F(inp, z(N, 2 * Fw), op, "inp"),
                         F(dout, z(N, Fw), op, "dout"), N, Fw);
  }
  void residual_forward(TensorView out, TensorView a, TensorView b, size_t n) override {
    Bf16Stage st(__func__);
    st.out("out", out).in("a", a, "b", b);
    const char* op = "residual_forward";
    cpu::residual_forward(F(out, n, op, "out"), F(a, n, op, "a"), F(b, n, op, "b"), n);
  }

  void crossentropy_row_max(TensorView row_max, TensorView logits, int N, int Vl,
                            int n_valid) override {
    Bf16Stage st(__func__);
    st.in("logits", logits);
    const char* op = "crossentropy_row_max";
    cpu::crossentropy_row_max(F(row_max, N, op, "row_max"), F(logits, z(N, Vl), op, "logits"), N,
                              Vl, n_valid);
  }
  void crossentropy_row_sums(TensorView sums, TensorView logits, TensorView row_max,
                             TensorView targets, int N, int Vl, int v0, int n_valid) override {
    Bf16Stage st(__func__);
    st.in("logits", logits);
    const char* op = "crossentropy_row_sums";
    cpu::crossentropy_row_sums(F(sums, 2 * (size_t)N, op, "sums"), F(logits, z(N, Vl), op, "logits"),
                               F(row_max, N, op, "row_max"), I(targets, N, op, "targets"), N, Vl,
                               v0, n_valid);
  }
  void crossentropy_backward(TensorView dlogits, TensorView logits, TensorView row_max,
                             TensorView sums, TensorView targets, int N, int Vl, int v0,
                             int n_valid, float dloss) override {
    Bf16Stage st(__func__);
    st.out("dlogits", dlogits).in("logits", logits);
    const char* op = "crossentropy_backward";
    cpu::crossentropy_backward(F(dlogits, z(N, Vl), op, "dlogits"),
                               F(logits, z(N, Vl), op, "logits"), F(row_max, N, op, "row_max"),
                               F(sums, 2 * (size_t)N, op, "sums"), I(targets, N, op, "targets"), N,
                               Vl, v0, n_valid, dloss);
  }

  void adamw_step(TensorView params, TensorView grads, TensorView m, TensorView v,
                  const AdamWSegment* segs, size_t nsegs, float lr, float beta1, float beta2,
                  float eps, int step) override {
    const char* op = "adamw_step";
    size_t end = 0;
    for (size_t i = 0; i < nsegs; i++) end = std::max(end, segs[i].offset + segs[i].n);
    static_assert(sizeof(AdamWSegment) == sizeof(cpu::AdamWSegment));
    cpu::adamw_step_segments(F(params, end, op, "params"), F(grads, end, op, "grads"),
                             F(m, end, op, "m"), F(v, end, op, "v"),
                             reinterpret_cast<const cpu::AdamWSegment*>(segs), nsegs, lr, beta1,
                             beta2, eps, step);
  }
  double sum_squares(TensorView x) override {
    return cpu::sum_squares(F(x, 0, "sum_squares", "x"), x.numel());
  }
  void scale(TensorView x, float s) override {
    Bf16Stage st(__func__);
    st.out("x", x);
    cpu::scale(F(x, 0, "scale", "x"), x.numel(), s);
  }
};

}  // namespace

Allocator& host_allocator() {
  static HostAllocator a;
  return a;
}

Backend& cpu_backend() {
  static CpuBackend b;
  return b;
}

}  // namespace cr
