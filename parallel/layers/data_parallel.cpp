#include "parallel/layers/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "core/common/error.h"

namespace cr {

// ---- bucket arithmetic -------------------------------------------------------------------------

std::vector<FlatRange> plan_buckets(const std::vector<size_t>& ready, size_t total,
                                    size_t bucket_floats) {
  CR_CHECK(!ready.empty() && ready.back() == 0, "grad ready points must end at offset 0");
  std::vector<FlatRange> out;
  size_t end = total;  // the open bucket is [ready point, end)
  for (size_t i = 0; i < ready.size(); i++) {
    const size_t p = ready[i];
    CR_CHECK(p <= end && (i == 0 || p < ready[i - 1]), "grad ready points must decrease: {} after {}",
             p, i ? ready[i - 1] : total);
    if (end - p >= bucket_floats || p == 0) {
      if (end > p) out.push_back({p, end});
      end = p;
    }
  }
  return out;
}

FlatRange owned_part(const FlatRange& bucket, int rank, int dp) {
  const size_t c = bucket.size() / (size_t)dp;
  return {bucket.begin + (size_t)rank * c, bucket.begin + (size_t)(rank + 1) * c};
}

FlatRange bucket_tail(const FlatRange& bucket, int dp) {
  return {bucket.begin + bucket.size() / (size_t)dp * (size_t)dp, bucket.end};
}

// ---- the communication thread -----------------------------------------------------------------

// Runs submitted jobs one at a time, in submission order. An exception drops the jobs still
// queued (later submissions run); drain() rethrows it on the caller's thread. (A timed-out collective does not throw: the communicator's
// fault path ends the job from this thread.)
class CommThread {
 public:
  CommThread() : thread_([this] { run(); }) {}
  ~CommThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void submit(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_all();
  }
  // Waits until every submitted job has run.
  void drain() {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return (jobs_.empty() && !busy_) || error_; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return quit_ || !jobs_.empty(); });
      if (quit_) return;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      busy_ = true;
      lock.unlock();
      try {
        job();
      } catch (...) {
        lock.lock();
        error_ = std::current_exception();
        jobs_.clear();
        busy_ = false;
        done_cv_.notify_all();
        continue;
      }
      lock.lock();
      busy_ = false;
      if (jobs_.empty()) done_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<std::function<void()>> jobs_;
  bool busy_ = false, quit_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after the members it uses exist
};

// ---- GradientSync ------------------------------------------------------------------------------
//
// Where the collectives run: on the host (CPU backend; or a GPU backend with the MPI communicator,
// buckets staged through host_), or on the device (a GPU backend with a communicator that takes
// device memory, NCCL: in place, asynchronous on its own stream, so overlap needs no thread).

GradientSync::GradientSync(Communicator& dp, const std::vector<size_t>& ready, size_t total,
                           Options opt, Backend& backend)
    : dp_(dp), opt_(opt), be_(backend), total_(total) {
  CR_CHECK(opt.zero == 0 || opt.zero == 1, "ZeRO stage {} (expected 0 or 1)", opt.zero);
  on_device_ = be_.device() != Device::CPU && dp.device_memory();
  buckets_ = plan_buckets(ready, total, std::max<size_t>(1, opt.bucket_bytes / sizeof(float)));
  if (opt.zero == 0 || dp.size() == 1) {
    owned_ = {{0, total}};
  } else {
    for (auto it = buckets_.rbegin(); it != buckets_.rend(); ++it)  // increasing offsets
      for (const FlatRange& r : {owned_part(*it, dp.rank(), dp.size()), bucket_tail(*it, dp.size())}) {
        if (r.size() == 0) continue;
        if (!owned_.empty() && owned_.back().end == r.begin) owned_.back().end = r.end;
        else owned_.push_back(r);
      }
  }
  for (size_t k = 0; k < buckets_.size(); k++) {
    labels_.push_back(fmt::format("grad.bucket {}/{}", k + 1, buckets_.size()));
    tail_labels_.push_back(labels_.back() + " tail");
  }
  if (opt.overlap && dp.size() > 1 && !on_device_) thread_ = std::make_unique<CommThread>();
  overlapped_ = opt.overlap && dp.size() > 1;
}

GradientSync::~GradientSync() = default;

void GradientSync::begin(float* grads) {
  grads_ = grads;
  buf_ = grads;
  if (be_.device() != Device::CPU && !on_device_) {  // staged through host memory
    host_.resize(total_);
    buf_ = host_.data();
  }
  launched_ = 0;
}

void GradientSync::ready(size_t offset) {
  if (!overlapped_ || !grads_) return;  // without overlap, finish() reduces every bucket in order
  while (launched_ < buckets_.size() && buckets_[launched_].begin >= offset) launch(launched_++);
}

void GradientSync::launch(size_t k) {
  const FlatRange& b = buckets_[k];
  if (buf_ != grads_)  // device -> host, on this (the main) thread, before the thread reads it
    be_.copy(TensorView::f32(buf_ + b.begin, {(int64_t)b.size()}),
             TensorView(grads_ + b.begin, {(int64_t)b.size()}, DType::F32, be_.device()));
  if (thread_)
    thread_->submit([this, k] { reduce(k); });
  else
    reduce(k);
}

// Bucket k's collectives on buf_, in place: all-reduce(sum) (zero 0); reduce-scatter(sum) of its
// dp equal parts, each rank's landing in its part, plus an all-reduce(sum) of the tail of fewer
// than dp floats that every rank owns (zero 1). No scratch: ZeRO's saving is all saving.
void GradientSync::reduce(size_t k) {
  const FlatRange& b = buckets_[k];
  if (!opt_.drop_label.empty() && labels_[k].rfind(opt_.drop_label, 0) == 0) return;
  auto issue = [&](std::unique_ptr<Work> w) {
    if (on_device_) pending_.push_back(std::move(w));
    else w->wait();
  };
  if (opt_.zero == 0)
    return issue(dp_.all_reduce_async(buf_ + b.begin, b.size(), ReduceOp::Sum, labels_[k].c_str()));
  const int dp = dp_.size();
  const size_t c = b.size() / (size_t)dp;
  if (c > 0)
    issue(dp_.reduce_scatter_async(buf_ + b.begin, buf_ + owned_part(b, dp_.rank(), dp).begin, c,
                                   ReduceOp::Sum, labels_[k].c_str()));
  const FlatRange tail = bucket_tail(b, dp);
  if (tail.size() > 0)
    issue(dp_.all_reduce_async(buf_ + tail.begin, tail.size(), ReduceOp::Sum, tail_labels_[k].c_str()));
}

void GradientSync::finish() {
  CR_CHECK(grads_ != nullptr, "GradientSync::finish() without begin()");
  const auto t0 = std::chrono::steady_clock::now();
  if (dp_.size() > 1) {
    while (launched_ < buckets_.size()) launch(launched_++);
    if (thread_) thread_->drain();
    for (auto& w : pending_) w->wait();
    pending_.clear();
    const float inv = 1.f / (float)dp_.size();
    for (const FlatRange& r : owned_) {  // host -> device, then the mean (device-side scale)
      const TensorView dev(grads_ + r.begin, {(int64_t)r.size()}, DType::F32, be_.device());
      if (buf_ != grads_) be_.copy(dev, TensorView::f32(buf_ + r.begin, {(int64_t)r.size()}));
      be_.scale(dev, inv);
    }
  }
  exposed_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  grads_ = buf_ = nullptr;
}

std::string GradientSync::describe() const {
  size_t largest = 0;
  for (const auto& b : buckets_) largest = std::max(largest, b.size());
  std::string s = fmt::format("gradient reduction over dp {}: {} bucket(s) of up to {:.2f} MB, {}",
                              dp_.size(), buckets_.size(), largest * 4 / 1e6,
                              !overlapped_ ? "after backward"
                              : thread_    ? "overlapped with backward on a communication thread"
                                           : "overlapped with backward on the communicator's stream");
  if (opt_.zero == 1 && dp_.size() > 1) {
    size_t mine = 0;
    for (const auto& r : owned_) mine += r.size();
    s += fmt::format("; ZeRO-1: this rank updates {} of {} local parameters (AdamW state {:.2f} MB "
                     "instead of {:.2f} MB)",
                     mine, total_, mine * 8 / 1e6, total_ * 8 / 1e6);
  }
  return s;
}

void GradientSync::all_reduce_mean(float* grads) {
  begin(grads);
  finish();
}

// In place, bucket by bucket: each rank's part to every rank (the tails are alike everywhere
// already). With host staging, this rank's parts go down to host_ and the buckets back up.
void GradientSync::gather_params(float* params) {
  if (opt_.zero == 0 || dp_.size() == 1) return;
  const bool staged = be_.device() != Device::CPU && !on_device_;
  float* buf = params;
  if (staged) {
    host_.resize(total_);
    buf = host_.data();
  }
  auto view = [&](float* base, size_t at, size_t n, Device d) {
    return TensorView(base + at, {(int64_t)n}, DType::F32, d);
  };
  const int dp = dp_.size();
  for (size_t k = 0; k < buckets_.size(); k++) {
    const FlatRange& b = buckets_[k];
    const FlatRange mine = owned_part(b, dp_.rank(), dp);
    if (mine.size() == 0) continue;  // a bucket of fewer than dp floats: all tail
    if (staged)
      be_.copy(view(buf, mine.begin, mine.size(), Device::CPU), view(params, mine.begin, mine.size(), be_.device()));
    const std::string label = fmt::format("param.gather {}/{}", k + 1, buckets_.size());
    dp_.all_gather(buf + mine.begin, buf + b.begin, mine.size(), label.c_str());
    const size_t n = mine.size() * (size_t)dp;
    if (staged) be_.copy(view(params, b.begin, n, be_.device()), view(buf, b.begin, n, Device::CPU));
  }
}

}  // namespace cr
