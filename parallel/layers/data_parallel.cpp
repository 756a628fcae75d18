#include "parallel/layers/data_parallel.h"

#include <algorithm>
#include <vector>

#include "core/backend/cpu/ops.h"

namespace cr {

GradientSync::GradientSync(Communicator& dp, size_t bucket_bytes)
    : dp_(dp), bucket_floats_(std::max<size_t>(1, bucket_bytes / sizeof(float))) {}

void GradientSync::all_reduce_mean(float* grads, size_t n) {
  if (dp_.size() == 1) return;
  std::vector<std::unique_ptr<Work>> pending;
  for (size_t first = 0; first < n; first += bucket_floats_)
    pending.push_back(dp_.all_reduce_async(grads + first, std::min(bucket_floats_, n - first),
                                           ReduceOp::Sum));
  for (auto& w : pending) w->wait();
  cpu::scale(grads, n, 1.f / (float)dp_.size());
}

}  // namespace cr
