// The CUDA backend's own state (device, stream, allocator, scratch), its copies and argument
// checks, and the process-wide entry points of core/backend/backend.h. The ops live in one .cu
// file each (cuda_backend.h says which).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

#include "core/backend/cuda/allocator.h"
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/cuda_check.h"

namespace cr::cuda {

CudaBackend::CudaBackend(int device) : device_(device) {
  CR_CUDA_CHECK(cudaSetDevice(device));
  // Non-blocking: the legacy default stream (used by any library or test that passes stream 0)
  // does not serialize against ours.
  CR_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  allocator_ = std::make_unique<CachingAllocator>(device, stream_);
}

CudaBackend::~CudaBackend() {
  // Never throws: errors here (a failed kernel, the runtime unloading at exit) are ignored; a
  // failure that mattered was reported by the op that caused it.
  if (stream_ && cudaStreamSynchronize(stream_) != cudaSuccess) (void)cudaGetLastError();
  dnn_.reset();
  blas_.reset();  // their workspaces come from allocator_
  if (scratch_) allocator_->deallocate(scratch_, scratch_bytes_);
  allocator_.reset();
  if (stream_ && cudaStreamDestroy(stream_) != cudaSuccess) (void)cudaGetLastError();
}

Allocator& CudaBackend::allocator() { return *allocator_; }

void* CudaBackend::scratch(size_t bytes) {
  if (bytes > scratch_bytes_) {
    // Grow geometrically (in whole MiB) so a sequence of slightly larger asks does not
    // reallocate each time. The old block may still be read by queued work: the allocator's
    // stream-ordered reuse makes freeing it here safe.
    const size_t want = std::max(bytes, scratch_bytes_ + scratch_bytes_ / 2);
    const size_t rounded = (want + (1 << 20) - 1) / (1 << 20) * (1 << 20);
    if (scratch_) allocator_->deallocate(scratch_, scratch_bytes_);
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    scratch_ = allocator_->allocate(rounded);
    scratch_bytes_ = rounded;
  }
  return scratch_;
}

// dst <- src; a host side makes the copy synchronous, so the caller may read or reuse the host
// memory as soon as it returns. Device to device stays asynchronous on the stream.
void CudaBackend::copy(TensorView dst, TensorView src) {
  CR_CHECK(dst.dtype == src.dtype && dst.numel() == src.numel(),
           "copy: {} {} on {} <- {} {} on {}", dst.numel(), dtype_name(dst.dtype),
           device_name(dst.device), src.numel(), dtype_name(src.dtype), device_name(src.device));
  const size_t bytes = dst.bytes();
  if (bytes == 0 || dst.data == src.data) return;
  CR_CHECK(dst.data && src.data, "copy: null data for {} bytes", bytes);
  const bool host_dst = dst.device == Device::CPU, host_src = src.device == Device::CPU;
  if (host_dst && host_src) {
    std::memmove(dst.data, src.data, bytes);
    return;
  }
  const cudaMemcpyKind kind = host_src   ? cudaMemcpyHostToDevice
                              : host_dst ? cudaMemcpyDeviceToHost
                                         : cudaMemcpyDeviceToDevice;
  // On our stream (not cudaMemcpy, which runs on the legacy stream and would not wait for the
  // ops queued on ours).
  CR_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, bytes, kind, stream_));
  if (host_dst || host_src) CR_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::synchronize() { CR_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

Backend::MemoryInfo CudaBackend::memory_info() {
  MemoryInfo m;
  CR_CUDA_CHECK(cudaMemGetInfo(&m.free_bytes, &m.total_bytes));
  return m;
}

// ---- argument checks (the CPU backend's F()/I() messages, for the GPU) -------------------------

void* cuda_arg(const TensorView& v, DType want, size_t need, const char* op, const char* arg) {
  if (v.empty()) {
    CR_CHECK(need == 0, "{}: {} is empty, need {} elements", op, arg, need);
    return nullptr;
  }
  CR_CHECK(v.device == Device::CUDA, "{}: {} is on {}, the CUDA backend needs device memory", op,
           arg, device_name(v.device));
  CR_CHECK(v.dtype == want, "{}: {} is {}, expected {}", op, arg, dtype_name(v.dtype),
           dtype_name(want));
  CR_CHECK(v.numel() >= need, "{}: {} has {} elements, needs {}", op, arg, v.numel(), need);
  return v.data;
}

DType compute_dtype(const TensorView& v, const char* op, const char* arg) {
  CR_CHECK(v.dtype == DType::F32 || v.dtype == DType::BF16,
           "{}: {} is {}, the CUDA backend computes in f32 or bf16", op, arg, dtype_name(v.dtype));
  return v.dtype;
}

}  // namespace cr::cuda

// ---- the process-wide entry points (core/backend/backend.h) ------------------------------------
namespace cr {

namespace {
// cudaGetDeviceCount, with its error cleared (it is not sticky, but a later cudaGetLastError
// would report it).
cudaError_t device_count(int* n) {
  *n = 0;
  const cudaError_t e = cudaGetDeviceCount(n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    *n = 0;
  }
  return e;
}
}  // namespace

bool cuda_available() {
  int n = 0;
  return device_count(&n) == cudaSuccess && n > 0;
}

int cuda_device_count() {
  int n = 0;
  device_count(&n);
  return n;
}

Backend& cuda_backend(int device) {
  static std::mutex mu;
  // Never destroyed: DeviceBuffers in other static objects may outlive any destruction order we
  // could pick, and the CUDA runtime tears itself down at exit.
  static cuda::CudaBackend* instance = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (instance) {
    CR_CHECK(instance->device_index() == device,
             "cuda_backend: this process already uses GPU {}, asked for GPU {} (one GPU per "
             "process)", instance->device_index(), device);
    return *instance;
  }
  int n = 0;
  const cudaError_t e = device_count(&n);
  if (e != cudaSuccess)
    CR_INPUT_ERROR("train.device: cuda: no usable GPU: cudaGetDeviceCount failed with {} ({}) [{}]",
                   cudaGetErrorName(e), cudaGetErrorString(e), cuda::library_versions());
  if (device < 0 || device >= n) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    CR_INPUT_ERROR("train.device: cuda: GPU {} asked for, this process sees {} GPU(s) "
                   "(CUDA_VISIBLE_DEVICES={})",
                   device, n, visible ? visible : "unset");
  }
  instance = new cuda::CudaBackend(device);
  return *instance;
}

}  // namespace cr
