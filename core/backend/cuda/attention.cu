// CudaBackend::attention_forward / _backward / _decode: grouped-query attention on the backend's
// stream, causal or over a key range per query (kv_range, backend.h), semantics exactly
// cr::cpu::attention_* (cpu/ops.h).
//
// Causal bf16 forward and backward go through cuDNN's fused flash attention (SDPA graphs of the
// cuDNN frontend, header-only, fetched by deploy/fetch_cudnn_frontend.sh; CR_HAVE_CUDNN_FRONTEND
// says whether this build has it). Our attention.cuh kernels run everything else: f32 (cuDNN
// SDPA needs 16-bit inputs), a kv_range (document masks and prefix-LM: our graphs are causal
// only; expressing per-query ranges would need cuDNN's ragged/bias inputs, which is not done),
// decode (one query row: nothing for a fused kernel to win), a build without the frontend, and
// any call cuDNN rejects at run time (head size, GPU, alignment), after one warning line.
// set_attention_impl forces one side so GPU tests can compare them.
//
// The packed layouts map onto cuDNN's [B, heads, T, hs] tensors by strides alone, so no copy:
//   Q of qkv [B,T,(H + 2 Hkv) hs]: dims [B,H,T,hs]   strides [T row, hs, row, 1], row = (H+2Hkv) hs
//   K, V: dims [B,Hkv,T,hs], same strides, at element offsets H hs and (H + Hkv) hs
//   out, dout [B,T,H hs]: dims [B,H,T,hs] strides [T H hs, hs, H hs, 1]
//   lse [B,H,T] f32: cuDNN's Stats [B,H,T,1] strides [H T, T, 1, 1]. Stats is max + ln(sum exp(
//   S - max)) of the scaled scores S = q.k / sqrt(hs), in natural log unless stats_use_log2 is
//   set (it is not): the same number as our lse, so either side's forward feeds either backward.
// dqkv takes dQ, dK, dV at the offsets of Q, K, V; with GQA cuDNN sums dK, dV over each group of
// H / Hkv query heads (query head h reads kv head h / (H / Hkv), as in the CPU op).
//
// Determinism: cuDNN's backward accumulates dQ with atomics; its deterministic mode on Hopper
// (cuDNN 9.19) needs a B*H*T*T workspace, which we refuse. So bf16 backward through cuDNN is not
// bit-reproducible run to run; AttentionImpl::Ours is (attention.cuh's sums have a fixed order).
#include "core/backend/cuda/attention.cuh"
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/launch.cuh"
#include "core/common/log.h"

#include <cmath>
#include <cstdint>
#include <string>

#ifndef CR_HAVE_CUDNN_FRONTEND
#define CR_HAVE_CUDNN_FRONTEND 0
#endif

#if CR_HAVE_CUDNN_FRONTEND
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <memory>
#include <unordered_map>
#include <vector>
#endif

namespace cr::cuda {

namespace {

// One attention call's sizes and compute dtype, checked once at the entry point.
struct AttnShape {
  int B, T, H, Hkv, hs;
  DType dtype;

  size_t row() const { return (size_t)(H + 2 * Hkv) * hs; }
  size_t qkv_numel() const { return (size_t)B * T * row(); }
  size_t out_numel() const { return (size_t)B * T * H * hs; }
  size_t lse_numel() const { return (size_t)B * H * T; }
  bool empty() const { return (size_t)B * T == 0; }
  std::string str() const {
    return fmt::format("B={} T={} H={} Hkv={} hs={} {}", B, T, H, Hkv, hs, dtype_name(dtype));
  }
  bool operator==(const AttnShape&) const = default;
};

// Sizes valid for both implementations; cuDNN's own limits (hs a multiple of 8, at most 256 on
// Hopper) are left to its support check, which knows the GPU.
AttnShape attn_shape(const char* op, const TensorView& qkv, int B, int T, int H, int Hkv, int hs) {
  CR_CHECK(B >= 0 && T >= 0, "{}: B={} T={} must not be negative", op, B, T);
  CR_CHECK(H >= 1 && Hkv >= 1 && H % Hkv == 0,
           "{}: H={} query heads must be a positive multiple of Hkv={}", op, H, Hkv);
  CR_CHECK(hs >= 1 && hs <= attention_detail::kMaxHeadSize, "{}: head size hs={} not in [1, {}]",
           op, hs, attention_detail::kMaxHeadSize);
  return AttnShape{B, T, H, Hkv, hs, compute_dtype(qkv, op, "qkv")};
}

// kv_range int32 [B,T,2] on this GPU, or nullptr when the view is empty (causal). Its values are
// not checked here (that would cost a device-to-host copy); the kernels clamp them into
// 0 <= lo <= t <= hi < T, so a bad range cannot read outside the sequence.
const int* key_ranges(const TensorView& kv_range, const AttnShape& s, const char* op) {
  if (kv_range.empty()) return nullptr;
  return cuda_ptr<int>(kv_range, DType::I32, 2 * (size_t)s.B * s.T, op, "kv_range");
}

// A key range runs our kernels: forcing cuDNN with one is an error, not a silent switch.
void check_range_impl(CudaBackend::AttentionImpl impl, const char* op, const AttnShape& s) {
  CR_CHECK(impl != CudaBackend::AttentionImpl::Cudnn,
           "{}: cuDNN attention forced for {}, but a kv_range (document mask / prefix-LM) runs "
           "only on our attention kernels: the cuDNN SDPA graphs here are causal only", op,
           s.str());
}

}  // namespace

void CudaBackend::set_attention_impl(AttentionImpl impl) { attention_impl_ = impl; }

// ---- cuDNN SDPA graphs ----------------------------------------------------------------------

#if CR_HAVE_CUDNN_FRONTEND

namespace fe = cudnn_frontend;

#ifndef CR_CUDNN_CHECK
#define CR_CUDNN_CHECK(expr) CR_LIB_CHECK("cuDNN", expr, CUDNN_STATUS_SUCCESS, cudnnGetErrorString)
#endif

namespace {

#define CR_ATTN_STR2(x) #x
#define CR_ATTN_STR(x) CR_ATTN_STR2(x)
constexpr const char* kFrontend = "cuDNN frontend " CR_ATTN_STR(CUDNN_FRONTEND_MAJOR_VERSION) "."
    CR_ATTN_STR(CUDNN_FRONTEND_MINOR_VERSION) "." CR_ATTN_STR(CUDNN_FRONTEND_PATCH_VERSION);
#undef CR_ATTN_STR
#undef CR_ATTN_STR2

// Variant-pack ids of the graphs' tensors.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kdO, kdQ, kdK, kdV };

struct GraphKey {
  AttnShape shape;
  bool backward;
  bool operator==(const GraphKey&) const = default;
};
struct GraphKeyHash {
  size_t operator()(const GraphKey& k) const {
    const AttnShape& s = k.shape;
    size_t h = (size_t)k.backward;
    for (long long v : {(long long)s.B, (long long)s.T, (long long)s.H, (long long)s.Hkv,
                        (long long)s.hs, (long long)s.dtype})
      h = h * 1000003u ^ std::hash<long long>{}(v);
    return h;
  }
};

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

// A [B, heads, T, hs] tensor over rows of `row` elements per token ([B,T,row] storage, the
// heads' hs channels side by side): the strided view that reads packed q|k|v or out in place.
TensorPtr head_major(fe::graph::Graph& g, const char* name, int64_t uid, const AttnShape& s,
                     int heads, int64_t row) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim({s.B, heads, s.T, s.hs})
                      .set_stride({(int64_t)s.T * row, s.hs, row, 1}));
}
void set_head_major(const TensorPtr& t, int64_t uid, const AttnShape& s, int heads, int64_t row) {
  t->set_output(true).set_uid(uid).set_dim({s.B, heads, s.T, s.hs}).set_stride(
      {(int64_t)s.T * row, s.hs, row, 1});
}
// lse [B,H,T] f32 as cuDNN's Stats [B,H,T,1].
void set_stats(fe::graph::Tensor_attributes& t, const AttnShape& s) {
  t.set_name("Stats")
      .set_uid(kStats)
      .set_data_type(fe::DataType_t::FLOAT)
      .set_dim({s.B, s.H, s.T, 1})
      .set_stride({(int64_t)s.H * s.T, s.T, 1, 1});
}

std::shared_ptr<fe::graph::Graph> new_graph() {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return g;
}

// Causal (keys s <= t, the diagonal anchored top-left: T queries against T keys), scale
// 1/sqrt(hs), no dropout, no bias. Stats is requested: it is our lse.
std::shared_ptr<fe::graph::Graph> forward_graph(const AttnShape& s) {
  auto g = new_graph();
  const int64_t row = (int64_t)s.row(), orow = (int64_t)s.H * s.hs;
  auto q = head_major(*g, "Q", kQ, s, s.H, row);
  auto k = head_major(*g, "K", kK, s, s.Hkv, row);
  auto v = head_major(*g, "V", kV, s, s.Hkv, row);
  auto attrs = fe::graph::SDPA_attributes()
                   .set_name("attention_forward")
                   .set_generate_stats(true)
                   .set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
                   .set_diagonal_band_right_bound(0)
                   .set_attn_scale(1.f / std::sqrt((float)s.hs));
  auto [o, stats] = g->sdpa(q, k, v, attrs);
  set_head_major(o, kO, s, s.H, orow);
  set_stats(*stats, s);
  stats->set_output(true);
  return g;
}

// dQ, dK, dV straight into the packed dqkv; no deterministic mode (see the file comment).
std::shared_ptr<fe::graph::Graph> backward_graph(const AttnShape& s) {
  auto g = new_graph();
  const int64_t row = (int64_t)s.row(), orow = (int64_t)s.H * s.hs;
  auto q = head_major(*g, "Q", kQ, s, s.H, row);
  auto k = head_major(*g, "K", kK, s, s.Hkv, row);
  auto v = head_major(*g, "V", kV, s, s.Hkv, row);
  auto o = head_major(*g, "O", kO, s, s.H, orow);
  auto dout = head_major(*g, "dO", kdO, s, s.H, orow);
  fe::graph::Tensor_attributes st;
  set_stats(st, s);
  auto stats = g->tensor(st);
  auto attrs = fe::graph::SDPA_backward_attributes()
                   .set_name("attention_backward")
                   .set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
                   .set_diagonal_band_right_bound(0)
                   .set_attn_scale(1.f / std::sqrt((float)s.hs));
  auto [dq, dk, dv] = g->sdpa_backward(q, k, v, o, dout, stats, attrs);
  set_head_major(dq, kdQ, s, s.H, row);
  set_head_major(dk, kdK, s, s.Hkv, row);
  set_head_major(dv, kdV, s, s.Hkv, row);
  return g;
}

// Lowers, plans and builds a graph for the current GPU. Returns "" on success, else why cuDNN
// cannot run it (the caller falls back or, when cuDNN is forced, throws).
std::string build_graph(fe::graph::Graph& g, cudnnHandle_t handle, int64_t& workspace) {
  std::string why;
  auto step = [&](const char* name, fe::error_t e) {
    if (e.is_bad()) why = fmt::format("{}: {}", name, e.get_message());
    return e.is_good();
  };
  (void)(step("validate", g.validate()) &&
         step("build_operation_graph", g.build_operation_graph(handle)) &&
         step("create_execution_plans", g.create_execution_plans({fe::HeurMode_t::A})) &&
         step("check_support", g.check_support()) && step("build_plans", g.build_plans()) &&
         step("get_workspace_size", g.get_workspace_size(workspace)));
  return why;
}

}  // namespace

struct CudaBackend::Dnn {
  struct Plan {
    std::shared_ptr<fe::graph::Graph> graph;  // null when unsupported
    int64_t workspace = 0;                    // bytes
    std::string unsupported;                  // why cuDNN cannot run this shape ("" if it can)
  };

  CudaBackend* backend;
  cudnnHandle_t handle = nullptr;
  std::unordered_map<GraphKey, Plan, GraphKeyHash> plans;
  // One workspace for all graphs, grown to the largest: the graphs run one at a time in stream
  // order, so they can share it.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  bool warned = false;

  explicit Dnn(CudaBackend& be) : backend(&be) {
    CR_CUDA_CHECK(cudaSetDevice(be.device_index()));
    CR_CUDNN_CHECK(cudnnCreate(&handle));
    try {
      CR_CUDNN_CHECK(cudnnSetStream(handle, be.stream()));
    } catch (...) {
      (void)cudnnDestroy(handle);
      throw;
    }
  }
  ~Dnn() {  // destructors never throw: failures here are ignored
    plans.clear();  // the plans' cuDNN descriptors go before the handle they were built with
    if (workspace) backend->allocator().deallocate(workspace, workspace_bytes);
    if (handle) (void)cudnnDestroy(handle);
  }

  // The plan for `key`, built on first use (a few hundred ms) and cached.
  const Plan& plan(const GraphKey& key) {
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    Plan p;
    try {
      auto g = key.backward ? backward_graph(key.shape) : forward_graph(key.shape);
      p.unsupported = build_graph(*g, handle, p.workspace);
      if (p.unsupported.empty()) p.graph = std::move(g);
    } catch (const std::exception& e) {  // the frontend throws for a missing libnvrtc and such
      p.unsupported = fmt::format("exception: {}", e.what());
    }
    // A rejected build must not leave a CUDA error for our next launch check to misreport.
    if (!p.graph) (void)cudaGetLastError();
    return plans.emplace(key, std::move(p)).first->second;
  }

  void* workspace_of(size_t bytes) {
    if (bytes > workspace_bytes) {
      if (workspace) backend->allocator().deallocate(workspace, workspace_bytes);
      workspace = nullptr;
      workspace_bytes = 0;
      workspace = backend->allocator().allocate(bytes);
      workspace_bytes = bytes;
    }
    return workspace;
  }

  // Runs a built plan; a failure here is a real error (the plan was supported), thrown as
  // cr::Error naming the op, the shape and the cuDNN versions.
  void execute(const char* op, const GraphKey& key, const Plan& p,
               std::unordered_map<int64_t, void*>& pack) {
    void* ws = workspace_of((size_t)p.workspace);
    fe::error_t e = p.graph->execute(handle, pack, ws);
    if (e.is_bad()) {
      const std::string call =
          fmt::format("{} ({}; cuDNN {}): graph execute", op, key.shape.str(), cudnnGetVersion());
      throw_library_error(kFrontend, (long)e.get_code(), e.get_message().c_str(), call.c_str(),
                          __FILE__, __LINE__);
    }
  }
};

void CudaBackend::DnnDeleter::operator()(Dnn* d) const { delete d; }

CudaBackend::Dnn& CudaBackend::dnn() {
  if (!dnn_) dnn_.reset(new Dnn(*this));
  return *dnn_;
}

namespace {

// The cuDNN plan for this call, or nullptr when ours must run: `impl` is Ours, the dtype is not
// bf16, a pointer is not 16-byte aligned (cuDNN's TMA loads need it), or cuDNN rejects the shape.
// A run-time rejection warns once in Auto mode and throws when cuDNN is forced.
const CudaBackend::Dnn::Plan* cudnn_plan(CudaBackend& be, CudaBackend::AttentionImpl impl,
                                         const char* op, const GraphKey& key,
                                         std::initializer_list<const void*> ptrs) {
  using Impl = CudaBackend::AttentionImpl;
  if (impl == Impl::Ours) return nullptr;
  if (key.shape.dtype != DType::BF16) {
    CR_CHECK(impl != Impl::Cudnn, "{}: cuDNN attention forced for {}, but cuDNN SDPA needs bf16",
             op, key.shape.str());
    return nullptr;
  }
  CudaBackend::Dnn& dnn = be.dnn();
  std::string why;
  for (const void* p : ptrs)
    if (!aligned16(p)) why = "a tensor is not 16-byte aligned";
  const CudaBackend::Dnn::Plan* plan = nullptr;
  if (why.empty()) {
    plan = &dnn.plan(key);
    why = plan->unsupported;
  }
  if (why.empty()) return plan;
  CR_CHECK(impl != Impl::Cudnn, "{}: cuDNN attention forced, but cuDNN {} ({}) cannot run {}: {}",
           op, cudnnGetVersion(), kFrontend, key.shape.str(), why);
  if (!dnn.warned) {
    dnn.warned = true;
    log::warn("{}: cuDNN {} cannot run {}, using our attention kernels: {}", op,
              cudnnGetVersion(), key.shape.str(), why);
  }
  return nullptr;
}

// cuDNN's variant pack takes non-const pointers; inputs are only read.
void* in(const void* p) { return const_cast<void*>(p); }

// Runs cuDNN's forward if it applies; false when ours must run.
bool cudnn_forward(CudaBackend& be, CudaBackend::AttentionImpl impl, const AttnShape& s,
                   void* out, float* lse, const void* qkv) {
  const char* op = "attention_forward";
  const GraphKey key{s, false};
  const auto* plan = cudnn_plan(be, impl, op, key, {out, lse, qkv});
  if (!plan) return false;
  const auto* x = static_cast<const bf16*>(qkv);
  std::unordered_map<int64_t, void*> pack = {
      {kQ, in(x)}, {kK, in(x + (size_t)s.H * s.hs)}, {kV, in(x + (size_t)(s.H + s.Hkv) * s.hs)},
      {kO, out}, {kStats, lse}};
  be.dnn().execute(op, key, *plan, pack);
  return true;
}

bool cudnn_backward(CudaBackend& be, CudaBackend::AttentionImpl impl, const AttnShape& s,
                    void* dqkv, const void* dout, const void* qkv, const void* out,
                    const float* lse) {
  const char* op = "attention_backward";
  const GraphKey key{s, true};
  const auto* plan = cudnn_plan(be, impl, op, key, {dqkv, dout, qkv, out, lse});
  if (!plan) return false;
  const size_t koff = (size_t)s.H * s.hs, voff = (size_t)(s.H + s.Hkv) * s.hs;
  const auto* x = static_cast<const bf16*>(qkv);
  auto* dx = static_cast<bf16*>(dqkv);
  std::unordered_map<int64_t, void*> pack = {
      {kQ, in(x)},      {kK, in(x + koff)}, {kV, in(x + voff)}, {kO, in(out)},
      {kdO, in(dout)},  {kStats, in(lse)},  {kdQ, dx},          {kdK, dx + koff},
      {kdV, dx + voff}};
  be.dnn().execute(op, key, *plan, pack);
  return true;
}

}  // namespace

#else  // !CR_HAVE_CUDNN_FRONTEND: this build has our kernels only.

struct CudaBackend::Dnn {
  bool warned = false;
};

void CudaBackend::DnnDeleter::operator()(Dnn* d) const { delete d; }

CudaBackend::Dnn& CudaBackend::dnn() {
  if (!dnn_) dnn_.reset(new Dnn());
  return *dnn_;
}

namespace {

// Without the frontend a bf16 call warns once (cuDNN would have run it) and forcing cuDNN throws.
bool no_cudnn(CudaBackend& be, CudaBackend::AttentionImpl impl, const char* op,
              const AttnShape& s) {
  using Impl = CudaBackend::AttentionImpl;
  CR_CHECK(impl != Impl::Cudnn,
           "{}: cuDNN attention forced for {}, but this build has no cuDNN frontend headers "
           "(CR_HAVE_CUDNN_FRONTEND=0)", op, s.str());
  if (impl == Impl::Auto && s.dtype == DType::BF16 && !be.dnn().warned) {
    be.dnn().warned = true;
    log::warn("{}: this build has no cuDNN frontend headers, using our attention kernels", op);
  }
  return false;
}

bool cudnn_forward(CudaBackend& be, CudaBackend::AttentionImpl impl, const AttnShape& s, void*,
                   float*, const void*) {
  return no_cudnn(be, impl, "attention_forward", s);
}
bool cudnn_backward(CudaBackend& be, CudaBackend::AttentionImpl impl, const AttnShape& s, void*,
                    const void*, const void*, const void*, const float*) {
  return no_cudnn(be, impl, "attention_backward", s);
}

}  // namespace

#endif  // CR_HAVE_CUDNN_FRONTEND

// ---- the backend ops ------------------------------------------------------------------------

void CudaBackend::attention_forward(TensorView out, TensorView lse, TensorView qkv, int B, int T,
                                    int H, int Hkv, int hs, TensorView kv_range) {
  const char* op = "attention_forward";
  const AttnShape s = attn_shape(op, qkv, B, T, H, Hkv, hs);
  const void* x = cuda_arg(qkv, s.dtype, s.qkv_numel(), op, "qkv");
  void* o = cuda_arg(out, s.dtype, s.out_numel(), op, "out");
  float* l = cuda_ptr<float>(lse, DType::F32, s.lse_numel(), op, "lse");
  const int* range = key_ranges(kv_range, s, op);
  if (range) check_range_impl(attention_impl_, op, s);
  if (s.empty() || (!range && cudnn_forward(*this, attention_impl_, s, o, l, x))) return;
  dispatch_float(s.dtype, [&](auto tag) {
    using Tp = decltype(tag);
    run_attention_forward<Tp>(CudaLaunch{stream(), op}, static_cast<Tp*>(o), l,
                              static_cast<const Tp*>(x), B, T, H, Hkv, hs, range);
  });
}

void CudaBackend::attention_backward(TensorView dqkv, TensorView dout, TensorView qkv,
                                     TensorView out, TensorView lse, int B, int T, int H, int Hkv,
                                     int hs, TensorView kv_range) {
  const char* op = "attention_backward";
  const AttnShape s = attn_shape(op, qkv, B, T, H, Hkv, hs);
  void* dx = cuda_arg(dqkv, s.dtype, s.qkv_numel(), op, "dqkv");
  const void* dy = cuda_arg(dout, s.dtype, s.out_numel(), op, "dout");
  const void* x = cuda_arg(qkv, s.dtype, s.qkv_numel(), op, "qkv");
  const void* y = cuda_arg(out, s.dtype, s.out_numel(), op, "out");
  const float* l = cuda_ptr<float>(lse, DType::F32, s.lse_numel(), op, "lse");
  const int* range = key_ranges(kv_range, s, op);
  if (range) check_range_impl(attention_impl_, op, s);
  if (s.empty() || (!range && cudnn_backward(*this, attention_impl_, s, dx, dy, x, y, l))) return;
  dispatch_float(s.dtype, [&](auto tag) {
    using Tp = decltype(tag);
    run_attention_backward<Tp>(CudaLaunch{stream(), op}, static_cast<Tp*>(dx),
                               static_cast<const Tp*>(dy), static_cast<const Tp*>(x),
                               static_cast<const Tp*>(y), l, B, T, H, Hkv, hs, range);
  });
}

// Always ours: one query row per head, nothing a fused SDPA kernel would win.
void CudaBackend::attention_decode(TensorView out, TensorView q, TensorView kcache,
                                   TensorView vcache, int len, int H, int Hkv, int hs) {
  const char* op = "attention_decode";
  CR_CHECK(len >= 1, "{}: cache length len={} must be at least 1", op, len);
  const AttnShape s = attn_shape(op, q, 1, 1, H, Hkv, hs);
  const size_t cache = (size_t)len * Hkv * hs;
  void* o = cuda_arg(out, s.dtype, (size_t)H * hs, op, "out");
  const void* qp = cuda_arg(q, s.dtype, (size_t)H * hs, op, "q");
  const void* kc = cuda_arg(kcache, s.dtype, cache, op, "kcache");
  const void* vc = cuda_arg(vcache, s.dtype, cache, op, "vcache");
  dispatch_float(s.dtype, [&](auto tag) {
    using Tp = decltype(tag);
    run_attention_decode<Tp>(CudaLaunch{stream(), op}, static_cast<Tp*>(o),
                             static_cast<const Tp*>(qp), static_cast<const Tp*>(kc),
                             static_cast<const Tp*>(vc), len, H, Hkv, hs);
  });
}

}  // namespace cr::cuda
