// Data parallelism: every DP rank holds the same parameters and computes gradients on its own
// slice of the global batch; the mean gradient is sum_r g_r / dp. The flat gradient buffer is
// cut into buckets of parallel.bucket_mb; all buckets are all-reduced (sum) asynchronously, then
// the buffer is scaled by 1/dp once. On a GPU backend the buffer is staged through host memory
// (the MPI communicator reads host memory; the NCCL communicator will reduce in place).
#pragma once

#include <cstddef>
#include <vector>

#include "core/backend/backend.h"
#include "parallel/comm/communicator.h"

namespace cr {

class GradientSync {
 public:
  GradientSync(Communicator& dp, size_t bucket_bytes, Backend& backend = cpu_backend());
  // grads[n] (f32, on the backend's device) <- mean over the DP group.
  void all_reduce_mean(float* grads, size_t n);

 private:
  Communicator& dp_;
  size_t bucket_floats_;
  Backend& be_;
  std::vector<float> host_;  // staging for a device buffer
};

}  // namespace cr
