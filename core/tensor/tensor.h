// Device-aware tensors: TensorView (non-owning: pointer, shape, dtype, device) and DeviceBuffer
// (owning, move-only, memory from a per-device Allocator).
//
// The model keeps parameters, gradients and activations in DeviceBuffers and hands the backend
// TensorViews, so the same model code runs on any device and dtype: a backend checks the dtype
// and device of every view it is given (core/backend/backend.h). Views never own (ggml's
// ggml_tensor / ggml_backend_buffer split).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "core/common/error.h"

namespace cr {

enum class DType : uint8_t { F32 = 0, BF16 = 1, I32 = 2 };
enum class Device : uint8_t { CPU = 0, CUDA = 1 };

inline size_t dtype_size(DType t) { return t == DType::BF16 ? 2 : 4; }
inline const char* dtype_name(DType t) {
  return t == DType::F32 ? "f32" : t == DType::BF16 ? "bf16" : "i32";
}
inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

// A range [begin, end) of a flat buffer, in elements (the parameter and gradient buffers are
// flat; ZeRO gives each data-parallel rank some ranges of them).
struct FlatRange {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
  bool operator==(const FlatRange&) const = default;
};

struct TensorView {
  static constexpr int kMaxDims = 4;
  void* data = nullptr;
  std::array<int64_t, kMaxDims> shape{};
  int ndim = 0;
  DType dtype = DType::F32;
  Device device = Device::CPU;

  TensorView() = default;
  TensorView(void* p, std::initializer_list<int64_t> dims, DType t = DType::F32,
             Device d = Device::CPU)
      : data(p), dtype(t), device(d) {
    CR_CHECK((int)dims.size() <= kMaxDims, "{} dims", dims.size());
    for (int64_t s : dims) shape[ndim++] = s;
  }
  static TensorView f32(float* p, std::initializer_list<int64_t> dims, Device d = Device::CPU) {
    return TensorView(p, dims, DType::F32, d);
  }
  static TensorView i32(int32_t* p, std::initializer_list<int64_t> dims, Device d = Device::CPU) {
    return TensorView(p, dims, DType::I32, d);
  }

  bool empty() const { return data == nullptr; }
  size_t numel() const {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return ndim == 0 ? 0 : n;
  }
  size_t bytes() const { return numel() * dtype_size(dtype); }
  // The same memory seen with another shape of the same number of elements (or fewer: a prefix).
  TensorView reshape(std::initializer_list<int64_t> dims) const {
    TensorView v(data, dims, dtype, device);
    CR_CHECK(v.numel() <= numel() || data == nullptr, "reshape to {} elements of a view of {}",
             v.numel(), numel());
    return v;
  }
  // Elements [first, first + n) as a 1-D view.
  TensorView slice(size_t first, size_t n) const {
    CR_CHECK(n <= numel() && first <= numel() - n, "slice of {} elements at {} of {} elements", n,
             first, numel());
    return TensorView(static_cast<char*>(data) + first * dtype_size(dtype), {(int64_t)n}, dtype,
                      device);
  }
  // Typed access, checked: a backend asks for the dtype it implements.
  float* f32() const {
    CR_CHECK(dtype == DType::F32, "a {} tensor used as f32", dtype_name(dtype));
    return static_cast<float*>(data);
  }
  int32_t* i32() const {
    CR_CHECK(dtype == DType::I32, "a {} tensor used as i32", dtype_name(dtype));
    return static_cast<int32_t*>(data);
  }
};

// Device memory for DeviceBuffer: one per device (the CPU's is aligned host memory; a GPU's is
// a caching allocator). zero() writes zero bytes over the whole allocation.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual Device device() const = 0;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p, size_t bytes) noexcept = 0;
  virtual void zero(void* p, size_t bytes) = 0;
};
// 64-byte aligned host memory, zero-filled on allocation (vector loads never split cache lines).
Allocator& host_allocator();

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Allocator& a, DType t, size_t numel) : alloc_(&a), dtype_(t) { resize(numel); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : alloc_(o.alloc_), dtype_(o.dtype_), data_(std::exchange(o.data_, nullptr)),
        numel_(std::exchange(o.numel_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      alloc_ = o.alloc_;
      dtype_ = o.dtype_;
      data_ = std::exchange(o.data_, nullptr);
      numel_ = std::exchange(o.numel_, 0);
    }
    return *this;
  }

  // Reallocates and zero-fills; existing contents are not kept.
  void resize(size_t numel) {
    CR_CHECK(alloc_ != nullptr, "DeviceBuffer without an allocator");
    release();
    numel_ = numel;
    if (numel) {
      data_ = alloc_->allocate(bytes());
      alloc_->zero(data_, bytes());
    }
  }
  void zero() {
    if (data_) alloc_->zero(data_, bytes());
  }
  size_t size() const { return numel_; }
  size_t bytes() const { return numel_ * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return alloc_ ? alloc_->device() : Device::CPU; }
  void* raw() const { return data_; }
  // The whole buffer as a 1-D view, or elements [first, first + n).
  TensorView view() const {
    return TensorView(data_, {(int64_t)numel_}, dtype_, device());
  }
  TensorView view(size_t first, size_t n) const { return view().slice(first, n); }
  float* f32() const { return view().f32(); }
  int32_t* i32() const { return view().i32(); }

 private:
  void release() noexcept {
    if (data_) alloc_->deallocate(data_, bytes());
    data_ = nullptr;
    numel_ = 0;
  }
  Allocator* alloc_ = nullptr;
  DType dtype_ = DType::F32;
  void* data_ = nullptr;
  size_t numel_ = 0;
};

}  // namespace cr
