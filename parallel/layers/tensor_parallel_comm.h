// The model's tensor-parallel collectives (core/model/tensor_parallel.h) over a Communicator for
// the TP group. The math each collective serves is stated where the model issues it
// (core/model/gpt.h): all-reduce(sum) after row-parallel layers in forward and after
// column-parallel layers in backward, all-reduce(max, sum) for the vocab-parallel loss.
#pragma once

#include <string>

#include "core/model/tensor_parallel.h"
#include "parallel/comm/communicator.h"

namespace cr {

class CommTensorParallel final : public TensorParallelComm {
 public:
  // drop_label: the negative control. A collective with this label is skipped (the test that
  // uses it must then fail parity); empty in every real run.
  explicit CommTensorParallel(Communicator& comm, std::string drop_label = "")
      : comm_(comm), drop_(std::move(drop_label)) {}
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  bool device_memory() const override { return comm_.device_memory(); }
  void all_reduce_sum(float* buf, size_t n, const char* what) override {
    if (!dropped(what)) comm_.all_reduce(buf, n, ReduceOp::Sum, what);
  }
  void all_reduce_max(float* buf, size_t n, const char* what) override {
    if (!dropped(what)) comm_.all_reduce(buf, n, ReduceOp::Max, what);
  }
  void all_gather(const float* send, float* recv, size_t n, const char* what) override {
    comm_.all_gather(send, recv, n, what);
  }

 private:
  bool dropped(const char* what) const { return !drop_.empty() && drop_ == what; }
  Communicator& comm_;
  std::string drop_;
};

}  // namespace cr
