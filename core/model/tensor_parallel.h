// The collectives a tensor-parallel model shard needs, as an interface: core stays free of MPI
// and NCCL, and parallel/ implements it over a Communicator for the TP group.
//
// Every call carries a label naming the step of the model it serves ("mlp.proj.fwd", ...), so
// a report can say which one hung and a test can drop exactly one (the negative control).
#pragma once

#include <cstddef>

namespace cr {

class TensorParallelComm {
 public:
  virtual ~TensorParallelComm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // True when buffers may be in device memory (NCCL); otherwise the model stages device
  // buffers through host memory.
  virtual bool device_memory() const { return false; }
  virtual void all_reduce_sum(float* buf, size_t n, const char* what) = 0;
  virtual void all_reduce_max(float* buf, size_t n, const char* what) = 0;
  // recv[size()*n] = every rank's send[n], in rank order.
  virtual void all_gather(const float* send, float* recv, size_t n, const char* what) = 0;
};

}  // namespace cr
