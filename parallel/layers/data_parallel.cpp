#include "parallel/layers/data_parallel.h"

#include <algorithm>
#include <vector>


namespace cr {

GradientSync::GradientSync(Communicator& dp, size_t bucket_bytes, Backend& backend)
    : dp_(dp), bucket_floats_(std::max<size_t>(1, bucket_bytes / sizeof(float))), be_(backend) {}

void GradientSync::all_reduce_mean(float* grads, size_t n) {
  if (dp_.size() == 1) return;
  const TensorView dev(grads, {(int64_t)n}, DType::F32, be_.device());
  float* buf = grads;
  if (be_.device() != Device::CPU) {  // staged: device -> host, reduce, host -> device
    host_.resize(n);
    buf = host_.data();
    be_.copy(TensorView::f32(buf, {(int64_t)n}), dev);
  }
  std::vector<std::unique_ptr<Work>> pending;
  for (size_t first = 0; first < n; first += bucket_floats_)
    pending.push_back(dp_.all_reduce_async(buf + first, std::min(bucket_floats_, n - first),
                                           ReduceOp::Sum, "grad.bucket"));
  for (auto& w : pending) w->wait();
  if (buf != grads) be_.copy(dev, TensorView::f32(buf, {(int64_t)n}));
  be_.scale(dev, 1.f / (float)dp_.size());
}

}  // namespace cr
