// CudaBackend::adamw_step and sum_squares: argument checks, then the adamw.cuh kernels on the
// backend's stream. Everything here is f32 (the master weights, their gradients, the moments).
#include <algorithm>
#include <vector>

#include "core/backend/cuda/adamw.cuh"
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/launch.cuh"

namespace cr::cuda {

// The block plan is built on the host and copied into scratch() with cudaMemcpyAsync: a few
// kilobytes per step, stream-ordered before the kernel that reads it. The source is pageable, so
// the copy is staged before cudaMemcpyAsync returns and the vector may die right after.
void CudaBackend::adamw_step(TensorView params, TensorView grads, TensorView m, TensorView v,
                             const AdamWSegment* segs, size_t nsegs, float lr, float beta1,
                             float beta2, float eps, int step) {
  const char* op = "adamw_step";
  CR_CHECK(step >= 1, "{}: step {} (counts from 1)", op, step);
  CR_CHECK(nsegs == 0 || segs != nullptr, "{}: {} segments but no table", op, nsegs);
  size_t end = 0;
  for (size_t k = 0; k < nsegs; k++) end = std::max(end, segs[k].offset + segs[k].n);
  float* p = cuda_ptr<float>(params, DType::F32, end, op, "params");
  const float* g = cuda_ptr<float>(grads, DType::F32, end, op, "grads");
  float* mm = cuda_ptr<float>(m, DType::F32, end, op, "m");
  float* vv = cuda_ptr<float>(v, DType::F32, end, op, "v");

  std::vector<AdamWPlanEntry> plan;
  const unsigned long long blocks = adamw_plan(plan, segs, nsegs, lr);
  if (plan.empty()) return;
  CR_CHECK(blocks <= kAdamWMaxBlocks && plan.size() <= (size_t)0x7fffffff,
           "{}: {} blocks for {} segments exceed the grid limit", op, blocks, plan.size());
  const size_t bytes = plan.size() * sizeof(AdamWPlanEntry);
  auto* dplan = static_cast<AdamWPlanEntry*>(scratch(bytes));
  CR_CUDA_CHECK(cudaMemcpyAsync(dplan, plan.data(), bytes, cudaMemcpyHostToDevice, stream()));
  run_adamw(CudaLaunch{stream(), op}, p, g, mm, vv, dplan, (int)plan.size(), (unsigned)blocks, lr,
            beta1, beta2, eps, step);
}

// The one op that returns a number: partials and the total live in scratch(); the total is
// copied back and the stream synchronized before it is read.
double CudaBackend::sum_squares(TensorView x) {
  const char* op = "sum_squares";
  const size_t n = x.numel();
  const float* px = cuda_ptr<float>(x, DType::F32, 0, op, "x");
  CR_CHECK(n == 0 || px != nullptr, "{}: x has {} elements but no data", op, n);
  const int blocks = sum_squares_blocks(n);
  auto* buf = static_cast<double*>(scratch(sizeof(double) * (size_t)(blocks + 1)));
  run_sum_squares(CudaLaunch{stream(), op}, buf, buf + 1, px, n);
  double total = 0.0;
  CR_CUDA_CHECK(cudaMemcpyAsync(&total, buf, sizeof(double), cudaMemcpyDeviceToHost, stream()));
  CR_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return total;
}

}  // namespace cr::cuda
