// Data parallelism: every DP rank computes gradients on its own slice of the global batch; the
// mean gradient is sum_r g_r / dp. Sits between the model's backward and the optimizer.
//
// Buckets. The flat gradient buffer is cut into buckets of about parallel.bucket_mb, along the
// points where backward finishes gradients (GPT::grad_ready_offsets: the final norm, layer L-1,
// ..., layer 0, the embeddings), so bucket k is complete as soon as backward passes its lowest
// point. The same buckets, reduced by the same calls in the same order, whatever the options:
// the options change when a reduction runs, never what it computes.
//
// Overlap (parallel.overlap). Each bucket is handed to a communication thread the moment
// backward completes it, so its reduction runs while backward computes the layers below; the
// step waits only in finish(), before the optimizer (PyTorch DDP, Megatron's overlap_grad_reduce).
// On the CPU, MPI progresses a non-blocking collective only inside MPI calls, so the thread
// drives it (MPI_THREAD_MULTIPLE: the main thread issues tensor-parallel collectives meanwhile).
//
// ZeRO-1 (parallel.zero = 1; Rajbhandari et al. 2020, "ZeRO", stage 1; Megatron's distributed
// optimizer shards per bucket the same way). Bucket [b, e) of length L = c dp + r (r < dp) is
// split into dp parts of c floats and a tail of r: DP rank d owns [b + d c, b + (d+1) c), and
// every rank owns the tail. Gradients are reduce-scattered in place (the tail all-reduced), so
// each rank ends up with the mean of its parts only; AdamW updates those parts of the parameters
// with moments of that size (1/dp of AdamW's state, plus fewer than dp floats per bucket); then
// every bucket of parameters is all-gathered in place. No scratch buffers. With TP, all of this
// happens inside each TP rank's local parameters: the DP group of a TP rank shares its layout.
//
// On a GPU backend with the MPI communicator the buckets are staged through host memory: copied
// to the host when backward completes them, and back when reduced. With a communicator that
// takes device memory (NCCL) they are reduced in place, asynchronously on its stream, ordered
// after the backward kernels that produced them (communicator's events), so no thread is needed.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "parallel/comm/communicator.h"

namespace cr {

// Buckets in the order backward completes them. ready: the points p (strictly decreasing, the
// last 0) after which every gradient at offset >= p is final; consecutive pieces [p_k, p_{k-1})
// join one bucket until it holds at least bucket_floats (a piece is never split).
std::vector<FlatRange> plan_buckets(const std::vector<size_t>& ready, size_t total,
                                    size_t bucket_floats);
// ZeRO: the part of `bucket` that DP rank `rank` of `dp` owns (empty when the bucket holds fewer
// than dp floats), and the tail every rank owns (fewer than dp floats, possibly none).
FlatRange owned_part(const FlatRange& bucket, int rank, int dp);
FlatRange bucket_tail(const FlatRange& bucket, int dp);

class CommThread;

class GradientSync {
 public:
  struct Options {
    size_t bucket_bytes = size_t(25) << 20;
    bool overlap = false;  // launch buckets from backward
    int zero = 0;  // 0 or 1
    // The negative control of the tests: bucket reductions whose label starts with this are
    // skipped (their gradients stay this rank's own, divided by dp); empty in every real run.
    std::string drop_label;
  };
  // ready: the model's grad_ready_offsets(); total: floats in the flat buffer.
  GradientSync(Communicator& dp, const std::vector<size_t>& ready, size_t total, Options opt,
               Backend& backend = cpu_backend());
  ~GradientSync();

  // One step's reduction of grads (f32, on the backend's device): begin() before the backward
  // of the step's last micro-batch, ready(p) from that backward (GPT::set_grad_ready_hook),
  // finish() before the optimizer. After finish(), grads holds the DP mean: everywhere
  // (zero 0), or in owned() (zero 1; the rest is stale).
  void begin(float* grads);
  void ready(size_t offset);
  void finish();
  // The same without overlap, for a buffer already complete.
  void all_reduce_mean(float* grads);
  // ZeRO-1, after the optimizer updated owned() of params: every rank receives every bucket.
  void gather_params(float* params);

  const std::vector<FlatRange>& buckets() const { return buckets_; }
  // The ranges of the flat buffer this rank's optimizer updates: the whole buffer (zero 0), or
  // its part of every bucket (zero 1), in increasing order.
  const std::vector<FlatRange>& owned() const { return owned_; }
  int zero() const { return opt_.zero; }
  // One line for the run's log: the buckets, whether they overlap backward, ZeRO's share.
  std::string describe() const;
  // Seconds the last finish() waited: the communication backward did not hide.
  double last_exposed_seconds() const { return exposed_s_; }

 private:
  void launch(size_t k);  // bucket k: stage to host, then reduce (now, on the thread, or queued)
  void reduce(size_t k);  // bucket k's collective on buf_

  Communicator& dp_;
  Options opt_;
  Backend& be_;
  size_t total_;
  bool on_device_ = false;   // collectives on device buffers (NCCL)
  bool overlapped_ = false;  // buckets launched from backward (thread_ on the host)
  std::vector<FlatRange> buckets_, owned_;
  std::unique_ptr<CommThread> thread_;  // overlap on the host only
  float* grads_ = nullptr;              // the step's buffer (begin .. finish)
  float* buf_ = nullptr;                // where the collectives run: grads_, or host_ when staged
  size_t launched_ = 0;
  std::vector<float> host_;             // staging for a device buffer
  std::vector<std::unique_ptr<Work>> pending_;  // device: collectives in flight
  std::vector<std::string> labels_, tail_labels_;
  double exposed_s_ = 0;
};

}  // namespace cr
