// A test-only CUDA emulator: the kernel bodies of core/backend/cuda/*.cuh compile with g++ and run
// on the CPU (DESIGN convention 15). Included by cuda_compat.cuh when CR_CUDA_EMULATE is defined.
//
// Model: cr::emu::Launch runs the blocks of a grid one at a time (x fastest); the threads of a
// block run concurrently, one pooled std::thread per CUDA thread. Everything a kernel may touch
// is checked, and a launch that hits a bug throws cr::emu::KernelError naming the block, the
// thread(s) and the file:line:
//   - __syncthreads(): every thread of the block must arrive at the same call site; a thread that
//     returns while others wait (or before they arrive) is an early return;
//   - warp shuffles: all 32 lanes of a warp at the same call site, full mask, whole warps;
//   - CR_SHARED arrays: index in range, no read of an element this block has not written, and no
//     conflicting accesses by two threads between two barriers (a race);
//   - any exception thrown by a kernel thread.
// When a check fires, every thread waiting in a barrier or shuffle is released (it unwinds with an
// internal Abort exception), so a broken kernel fails the launch instead of hanging it.
// See tests/emu/README.md for what this cannot catch.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <functional>
#include <math.h>
#include <memory>
#include <mutex>
#include <source_location>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "core/tensor/bf16.h"

// ---------------------------------------------------------------------------------------------
// Launch geometry and the CUDA qualifiers.

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

// Per CUDA thread: set by the worker thread before it runs the kernel body. Kernels read them
// like CUDA's built-ins (threadIdx.x ...); on a host thread they read as zeros/ones.
inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

#define __global__
#define __device__
#define __host__
#define __forceinline__
#define __launch_bounds__(...)
// No __shared__: shared memory is declared with CR_SHARED so that it is race-checked.
#define CR_SHARED(T, name, count) \
  static ::cr::emu::SharedArray<T, (count)> name { #name, __FILE__, __LINE__ }

namespace cr::emu {

// What a failed launch throws.
struct KernelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

constexpr unsigned kWarp = 32;
constexpr unsigned kMaxThreads = 1024;
constexpr unsigned kNone = ~0u;

// A call site of a barrier or shuffle (from std::source_location).
struct Site {
  const char* file = "";
  unsigned line = 0;
  unsigned column = 0;
  static Site from(const std::source_location& l) {
    return {l.file_name(), (unsigned)l.line(), (unsigned)l.column()};
  }
  bool operator==(const Site& o) const {
    return line == o.line && column == o.column && std::strcmp(file, o.file) == 0;
  }
  std::string str() const {
    if (line == 0) return file[0] ? std::string(file) : std::string("kernel start");
    return std::string(file) + ":" + std::to_string(line);
  }
};

// Unwinds a kernel thread after another thread's check fired (never reported itself).
struct Abort {};
// A check that fired in the throwing thread; the message is reported.
struct CheckFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline std::string dim_str(dim3 d) {
  return std::string("(") + std::to_string(d.x) + "," + std::to_string(d.y) + "," +
         std::to_string(d.z) + ")";
}

// Rendezvous state of one warp for shuffles and __syncwarp.
struct Warp {
  std::atomic<uint32_t> gen{0};  // completed exchanges (waiters sleep on it; see await())
  unsigned arrived = 0;          // lanes waiting at the current exchange
  unsigned finished = 0;         // lanes that returned from the kernel
  Site site;                     // call site of the current exchange
  const char* kind = "";         // "__shfl_xor_sync" ...
  unsigned first_lane = 0;       // first lane that arrived at the current exchange
  int width = 32;
  unsigned type_size = 0;
  uint64_t vals[2][kWarp] = {};  // double-buffered by gen parity (see shuffle())
};

// One block in flight: barrier, warps, error list. Owned by run_grid for the block's run.
struct Block {
  dim3 grid, dim, idx;
  unsigned n = 0;  // threads in the block
  bool race_check = true;

  std::mutex m;           // guards everything below but the atomics
  unsigned finished = 0;  // threads that returned from the kernel
  unsigned blocked = 0;   // threads waiting in an incomplete barrier or shuffle
  unsigned first_finished = kNone;
  unsigned bar_arrived = 0;
  std::atomic<uint32_t> bar_gen{0};  // completed barriers (waiters sleep on it; see await())
  Site bar_site;
  unsigned bar_first = 0;
  Warp warps[kMaxThreads / kWarp];
  std::atomic<bool> aborted{false};
  std::vector<std::string> errors;

  // Barrier intervals ("epochs") are numbered globally, so shared arrays need no reset between
  // blocks: an element last written before first_epoch was not written by this block. Both
  // change only when every thread of the block is inside the barrier, so running threads read
  // them without a lock.
  uint64_t first_epoch = 0;
  uint64_t epoch = 0;
  Site epoch_site;  // the barrier that opened the current epoch ("kernel start" for the first)

  dim3 thread_of(unsigned tid) const {
    return dim3(tid % dim.x, (tid / dim.x) % dim.y, tid / (dim.x * dim.y));
  }
  std::string thread_str(unsigned tid) const {
    return std::string("thread ") + dim_str(thread_of(tid));
  }
  std::string epoch_str() const {
    return epoch_site.line == 0 ? std::string("since the kernel started")
                                : std::string("since the __syncthreads() at ") + epoch_site.str();
  }

  // Records an error of thread `tid`, stops the block and wakes every waiter. Caller holds m.
  void fail_locked(unsigned tid, const std::string& msg) {
    if (errors.size() < 8) errors.push_back(thread_str(tid) + ": " + msg);
    aborted.store(true);
    // Moving every generation releases every waiter; they see `aborted` and unwind.
    bar_gen.fetch_add(1, std::memory_order_release);
    bar_gen.notify_all();
    for (auto& w : warps) {
      w.gen.fetch_add(1, std::memory_order_release);
      w.gen.notify_all();
    }
  }
  void fail(unsigned tid, const std::string& msg) {
    std::lock_guard<std::mutex> lk(m);
    fail_locked(tid, msg);
  }

  // All threads either finished or waiting at something that can no longer complete.
  void check_deadlock_locked(unsigned tid) {
    if (blocked == 0 || blocked + finished != n) return;
    std::string msg = "deadlock: every thread of the block waits or has returned:";
    if (bar_arrived) {
      msg += std::string(" ") + std::to_string(bar_arrived) +
             " thread(s) (first: " + thread_str(bar_first) + ") wait at __syncthreads() at " +
             bar_site.str() + ";";
    }
    for (unsigned w = 0; w * kWarp < n; ++w) {
      if (warps[w].arrived) {
        msg += std::string(" warp ") + std::to_string(w) + ": " + std::to_string(warps[w].arrived) +
               " lane(s) wait at " + warps[w].kind + " at " + warps[w].site.str() + ";";
      }
    }
    if (finished) msg += std::string(" ") + std::to_string(finished) + " thread(s) returned;";
    msg += " (threads of one warp split between a barrier and a shuffle?)";
    fail_locked(tid, msg);
    throw Abort{};
  }
};

// Sleeps until `gen` moves past `seen` (an exchange completed, or the block aborted). Waiting on
// the atomic rather than a condition variable keeps released threads off the block mutex.
inline void await(Block& b, std::atomic<uint32_t>& gen, uint32_t seen) {
  while (gen.load(std::memory_order_acquire) == seen) gen.wait(seen, std::memory_order_acquire);
  if (b.aborted.load()) throw Abort{};
}

// The CUDA thread the calling std::thread is running (null on a host thread).
inline thread_local Block* tl_block = nullptr;
inline thread_local unsigned tl_tid = 0;

inline Block& current(const char* what) {
  if (!tl_block) throw std::logic_error(std::string("cr::emu: ") + what + " outside a kernel");
  return *tl_block;
}

inline std::atomic<uint64_t>& global_epoch() {
  static std::atomic<uint64_t> e{0};
  return e;
}

// Called by a thread when its kernel body returned normally.
inline void on_return(Block& b, unsigned tid) {
  std::unique_lock<std::mutex> lk(b.m);
  ++b.finished;
  if (b.first_finished == kNone) b.first_finished = tid;
  Warp& w = b.warps[tid / kWarp];
  ++w.finished;
  if (b.aborted) return;
  if (b.bar_arrived) {
    b.fail_locked(tid, std::string("returned from the kernel while ") +
                           std::to_string(b.bar_arrived) + " thread(s) (first: " +
                           b.thread_str(b.bar_first) + ") wait at __syncthreads() at " +
                           b.bar_site.str() + " (early return before a barrier)");
    return;
  }
  if (w.arrived && b.n % kWarp == 0) {
    b.fail_locked(tid, std::string("returned from the kernel while ") + std::to_string(w.arrived) +
                           " lane(s) of its warp (first: lane " + std::to_string(w.first_lane) +
                           ") wait at " + w.kind + " at " + w.site.str() +
                           " (early return before a warp exchange)");
    return;
  }
  try {
    b.check_deadlock_locked(tid);
  } catch (Abort&) {
  }
}

// __syncthreads(): a checked block barrier that also opens a new shared-memory epoch.
inline void syncthreads(Site site) {
  Block& b = current("__syncthreads()");
  const unsigned tid = tl_tid;
  std::unique_lock<std::mutex> lk(b.m);
  if (b.aborted) throw Abort{};
  if (b.finished) {
    b.fail_locked(tid, std::string("reached __syncthreads() at ") + site.str() + " after " +
                           b.thread_str(b.first_finished) +
                           " returned from the kernel (early return before a barrier)");
    throw Abort{};
  }
  if (b.bar_arrived == 0) {
    b.bar_site = site;
    b.bar_first = tid;
  } else if (!(site == b.bar_site)) {
    b.fail_locked(tid, std::string("divergent __syncthreads(): reached the one at ") + site.str() +
                           " while " + std::to_string(b.bar_arrived) + " thread(s) (first: " +
                           b.thread_str(b.bar_first) + ") wait at the one at " + b.bar_site.str());
    throw Abort{};
  }
  const uint32_t gen = b.bar_gen.load(std::memory_order_relaxed);
  if (++b.bar_arrived == b.n) {
    b.bar_arrived = 0;
    b.blocked -= b.n - 1;
    b.epoch = ++global_epoch();
    b.epoch_site = site;
    b.bar_gen.fetch_add(1, std::memory_order_release);
    b.bar_gen.notify_all();
    return;
  }
  ++b.blocked;
  b.check_deadlock_locked(tid);
  lk.unlock();
  await(b, b.bar_gen, gen);
}

enum class Shfl { Idx, Xor, Down, Up };

inline const char* shfl_name(Shfl m) {
  switch (m) {
    case Shfl::Idx: return "__shfl_sync";
    case Shfl::Xor: return "__shfl_xor_sync";
    case Shfl::Down: return "__shfl_down_sync";
    case Shfl::Up: return "__shfl_up_sync";
  }
  return "?";
}

// The lane whose value `lane` receives (PTX shfl.sync semantics: a source outside the lane's
// width-segment, or later segments for xor, gives the lane its own value).
inline unsigned shfl_source(Shfl mode, unsigned lane, long long b, int width) {
  const long long seg_lo = lane & ~(unsigned)(width - 1);
  const long long seg_hi = seg_lo + width - 1;
  long long j = lane;
  bool ok = true;
  switch (mode) {
    case Shfl::Idx: j = seg_lo + (b & (width - 1)); break;
    case Shfl::Xor: j = (long long)(lane ^ (unsigned)b); ok = j <= seg_hi; break;
    case Shfl::Down: j = lane + b; ok = j <= seg_hi; break;
    case Shfl::Up: j = (long long)lane - b; ok = j >= seg_lo; break;
  }
  return ok ? (unsigned)j : lane;
}

// A rendezvous of the 32 lanes of the caller's warp. Each lane deposits `bits`; returns the
// buffer holding every lane's deposit. Buffers alternate by exchange parity: a lane can only
// start exchange g+2 after all lanes arrived at g+1, i.e. after all finished reading g.
inline const uint64_t* warp_exchange(const char* kind, unsigned mask, uint64_t bits,
                                     unsigned type_size, int width, Site site) {
  Block& b = current(kind);
  const unsigned tid = tl_tid;
  std::unique_lock<std::mutex> lk(b.m);
  if (b.aborted) throw Abort{};
  auto fail = [&](const std::string& msg) {
    b.fail_locked(tid, std::string(kind) + " at " + site.str() + ": " + msg);
    throw Abort{};
  };
  if (b.n % kWarp != 0) {
    fail(std::string("the block has ") + std::to_string(b.n) +
         " threads; kernels that use warp operations need whole warps (a multiple of 32)");
  }
  if (mask != 0xffffffffu) fail("only the full mask 0xffffffff is supported (whole warps)");
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    fail(std::string("width ") + std::to_string(width) + " is not a power of two in [1, 32]");
  }
  const unsigned lane = tid % kWarp;
  Warp& w = b.warps[tid / kWarp];
  if (w.finished) {
    fail(std::string("reached after ") + std::to_string(w.finished) +
         " lane(s) of its warp returned from the kernel (early return before a warp exchange)");
  }
  if (w.arrived == 0) {
    w.site = site;
    w.kind = kind;
    w.first_lane = lane;
    w.width = width;
    w.type_size = type_size;
  } else if (!(site == w.site) || std::strcmp(kind, w.kind) != 0) {
    fail(std::string("divergent warp: lane ") + std::to_string(w.first_lane) +
         " of this warp waits at " + w.kind + " at " + w.site.str());
  } else if (width != w.width || type_size != w.type_size) {
    fail(std::string("lanes disagree on width or value type (lane ") +
         std::to_string(w.first_lane) + ": width " + std::to_string(w.width) + ")");
  }
  const uint32_t gen = w.gen.load(std::memory_order_relaxed);
  uint64_t* buf = w.vals[gen & 1];
  buf[lane] = bits;
  if (++w.arrived == kWarp) {
    w.arrived = 0;
    b.blocked -= kWarp - 1;
    w.gen.fetch_add(1, std::memory_order_release);
    w.gen.notify_all();
    return buf;
  }
  ++b.blocked;
  b.check_deadlock_locked(tid);
  lk.unlock();
  await(b, w.gen, gen);
  return buf;
}

template <class T>
T shuffle(Shfl mode, unsigned mask, T v, long long b, int width, Site site) {
  static_assert(std::is_arithmetic_v<T> && sizeof(T) <= 8);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  const uint64_t* buf = warp_exchange(shfl_name(mode), mask, bits, sizeof(T), width, site);
  const unsigned src = shfl_source(mode, tl_tid % kWarp, b, width);
  T r;
  std::memcpy(&r, &buf[src], sizeof(T));
  return r;
}

// ---------------------------------------------------------------------------------------------
// The worker pool: one std::thread per CUDA thread of the largest block so far, reused across
// blocks and launches (threads are expensive to create, worse under sanitizers).

class Pool {
 public:
  static Pool& get() {
    static Pool p;
    return p;
  }
  // Runs job(tid) for tid in [0, n) on n workers and waits for all of them. One caller at a time
  // (run_grid holds launch_mutex()).
  void run(unsigned n, const std::function<void(unsigned)>& job) {
    while (workers_.size() < n) {
      workers_.push_back(std::make_unique<Worker>());
      Worker* w = workers_.back().get();
      const unsigned id = (unsigned)workers_.size() - 1;
      w->th = std::thread([this, w, id] { loop(*w, id); });
    }
    job_ = &job;
    target_ = n;
    done_.store(0, std::memory_order_relaxed);
    for (unsigned i = 0; i < n; ++i) {
      workers_[i]->ticket.fetch_add(1, std::memory_order_release);  // publishes job_, target_
      workers_[i]->ticket.notify_one();
    }
    for (unsigned d; (d = done_.load(std::memory_order_acquire)) != n;) {
      done_.wait(d, std::memory_order_acquire);
    }
    job_ = nullptr;
  }
  ~Pool() {
    stop_.store(true);
    for (auto& w : workers_) {
      w->ticket.fetch_add(1, std::memory_order_release);
      w->ticket.notify_one();
    }
    for (auto& w : workers_) w->th.join();
  }

 private:
  // Workers sleep on their own ticket (a futex), so waking n of them wakes only those n.
  struct Worker {
    std::thread th;
    std::atomic<uint32_t> ticket{0};
  };
  void loop(Worker& w, unsigned id) {
    uint32_t seen = 0;
    for (;;) {
      uint32_t t;
      while ((t = w.ticket.load(std::memory_order_acquire)) == seen) {
        w.ticket.wait(seen, std::memory_order_acquire);
      }
      seen = t;
      if (stop_.load()) return;
      const unsigned target = target_;  // read before done_ lets the caller start the next run
      (*job_)(id);
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == target) done_.notify_one();
    }
  }
  std::vector<std::unique_ptr<Worker>> workers_;
  const std::function<void(unsigned)>* job_ = nullptr;
  unsigned target_ = 0;
  std::atomic<unsigned> done_{0};
  std::atomic<bool> stop_{false};
};

// One CUDA thread: set the built-ins, run the body, report how it ended.
inline void run_thread(Block& b, unsigned tid, const std::function<void()>& body) {
  tl_block = &b;
  tl_tid = tid;
  threadIdx = b.thread_of(tid);
  blockIdx = b.idx;
  blockDim = b.dim;
  gridDim = b.grid;
  try {
    body();
    on_return(b, tid);
  } catch (Abort&) {
  } catch (CheckFailure& e) {
    b.fail(tid, e.what());
  } catch (std::exception& e) {
    b.fail(tid, std::string("exception thrown in the kernel: ") + e.what());
  } catch (...) {
    b.fail(tid, "unknown exception thrown in the kernel");
  }
  tl_block = nullptr;
  threadIdx = blockIdx = dim3(0, 0, 0);
  blockDim = gridDim = dim3(1, 1, 1);
}

inline void check_geometry(dim3 grid, dim3 block) {
  const unsigned long long n = (unsigned long long)block.x * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || n > kMaxThreads || block.z > 64) {
    throw KernelError(std::string("cr::emu: invalid block ") + dim_str(block) +
                      " (CUDA allows at most 1024 threads per block, z <= 64)");
  }
  if (grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu) {
    throw KernelError(std::string("cr::emu: invalid grid ") + dim_str(grid) + " (y, z <= 65535)");
  }
}

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

// Runs one block; throws KernelError if any of its threads failed.
inline void run_block(dim3 grid, dim3 block, dim3 idx, bool race_check,
                      const std::function<void()>& body) {
  auto b = std::make_unique<Block>();  // ~20 KiB: not on the stack
  b->grid = grid;
  b->dim = block;
  b->idx = idx;
  b->n = block.x * block.y * block.z;
  b->race_check = race_check;
  b->epoch = b->first_epoch = ++global_epoch();
  Pool::get().run(b->n, [&](unsigned tid) { run_thread(*b, tid, body); });
  if (b->errors.empty()) return;
  std::string msg = std::string("cr::emu: kernel failed in block ") + dim_str(idx) + " of grid " +
                    dim_str(grid) + " (block " + dim_str(block) + "):";
  for (auto& e : b->errors) msg += std::string("\n  ") + e;
  throw KernelError(msg);
}

// Runs every block of the grid, one at a time (x fastest; the reverse order when asked), and
// stops at the first failing block.
inline void run_grid(dim3 grid, dim3 block, bool race_check, bool reverse,
                     const std::function<void()>& body) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  check_geometry(grid, block);
  if (tl_block) throw KernelError("cr::emu: a kernel launch from inside a kernel");
  std::lock_guard<std::mutex> serial(launch_mutex());
  const uint64_t total = (uint64_t)grid.x * grid.y * grid.z;
  for (uint64_t k = 0; k < total; ++k) {
    const uint64_t i = reverse ? total - 1 - k : k;
    const dim3 idx((unsigned)(i % grid.x), (unsigned)(i / grid.x % grid.y),
                   (unsigned)(i / ((uint64_t)grid.x * grid.y)));
    run_block(grid, block, idx, race_check, body);
  }
}

}  // namespace detail

// Runs a kernel on the CPU: launch(grid, block, kernel, args...). See the top of this file.
struct Launch {
  bool race_check = true;  // shared-memory race checks (range and initialization always)
  // Run the blocks last to first: a kernel whose output depends on block order (float atomics,
  // one block reading another's output) then gives a different answer than in order.
  bool reverse_blocks = false;

  template <class... KArgs, class... Args>
  void operator()(dim3 grid, dim3 block, void (*kernel)(KArgs...), Args&&... args) const {
    static_assert(sizeof...(KArgs) == sizeof...(Args), "cr::emu::Launch: wrong argument count");
    // Every thread calls the kernel with its own copies of the arguments (lvalues: never moved).
    const std::function<void()> body = [&] { kernel(args...); };
    detail::run_grid(grid, block, race_check, reverse_blocks, body);
  }
};

// ---------------------------------------------------------------------------------------------
// Race-checked shared memory. CR_SHARED(T, name, count) declares a static SharedArray: one array
// for all threads of the running block (blocks run one at a time). name[i] is a proxy whose reads
// and writes are checked against the other threads' accesses in the same barrier interval.

template <class T, std::size_t N>
class SharedArray {
  static_assert(N > 0, "CR_SHARED: count must be positive");
  static_assert(std::is_trivially_copyable_v<T>, "CR_SHARED: T must be trivially copyable");

 public:
  SharedArray(const char* name, const char* file, int line)
      : name_(name), file_(file), line_(line), data_(new T[N]()), meta_(new Meta[N]()) {}
  SharedArray(const SharedArray&) = delete;
  SharedArray& operator=(const SharedArray&) = delete;

  class Ref {
   public:
    Ref(SharedArray& a, std::size_t i) : a_(a), i_(i) {}
    Ref(const Ref&) = default;
    operator T() const { return a_.load(i_); }
    Ref& operator=(T v) {
      a_.store(i_, v);
      return *this;
    }
    Ref& operator=(const Ref& o) {
      const T v = o;
      a_.store(i_, v);
      return *this;
    }
    Ref& operator+=(T v) { return update([&](T& x) { x += v; }); }
    Ref& operator-=(T v) { return update([&](T& x) { x -= v; }); }
    Ref& operator*=(T v) { return update([&](T& x) { x *= v; }); }
    Ref& operator/=(T v) { return update([&](T& x) { x /= v; }); }
    // Integer arrays (instantiated only when used).
    Ref& operator%=(T v) { return update([&](T& x) { x %= v; }); }
    Ref& operator&=(T v) { return update([&](T& x) { x &= v; }); }
    Ref& operator|=(T v) { return update([&](T& x) { x |= v; }); }
    Ref& operator^=(T v) { return update([&](T& x) { x ^= v; }); }
    Ref& operator++() { return update([](T& x) { ++x; }); }
    Ref& operator--() { return update([](T& x) { --x; }); }
    T operator++(int) {
      T old{};
      update([&](T& x) { old = x++; });
      return old;
    }
    T operator--(int) {
      T old{};
      update([&](T& x) { old = x--; });
      return old;
    }

   private:
    template <class F>
    Ref& update(F f) {
      a_.modify(i_, f);
      return *this;
    }
    SharedArray& a_;
    std::size_t i_;
  };

  template <std::integral I>
  Ref operator[](I i) {
    bool bad = (unsigned long long)i >= N;
    if constexpr (std::is_signed_v<I>) bad = bad || i < 0;
    if (bad) {
      throw detail::CheckFailure(std::string("shared-memory index ") + std::to_string(i) +
                                 " out of range [0, " + std::to_string(N) + ") in " + where());
    }
    return Ref(*this, (std::size_t)i);
  }
  static constexpr std::size_t size() { return N; }

 private:
  // Who touched an element in the current epoch. Epochs are global (see detail::Block).
  struct Meta {
    uint64_t w_epoch = 0;  // epoch of the last write (0: never)
    uint64_t r_epoch = 0;  // epoch of the reads recorded in r1/r2
    unsigned writer = 0;
    unsigned r1 = detail::kNone, r2 = detail::kNone;  // up to two distinct readers
  };
  static constexpr unsigned kStripes = 64;

  std::string where() const {
    return std::string(name_) + " (CR_SHARED at " + file_ + ":" + std::to_string(line_) + ")";
  }
  std::string elem(std::size_t i) const {
    return std::string(name_) + "[" + std::to_string(i) + "] (CR_SHARED at " + file_ + ":" +
           std::to_string(line_) + ")";
  }
  [[noreturn]] void race(detail::Block& b, std::size_t i, const std::string& what,
                         unsigned other, const char* other_did) const {
    throw detail::CheckFailure(std::string("shared-memory race on ") + elem(i) + ": " + what + " " +
                               b.thread_str(other) + " " + other_did + " it " + b.epoch_str() +
                               " (a __syncthreads() is missing between them)");
  }

  void check_read(detail::Block& b, unsigned tid, std::size_t i, Meta& m) {
    if (m.w_epoch < b.first_epoch) {
      throw detail::CheckFailure(std::string("read of ") + elem(i) +
                                 " before any thread of this block wrote it (shared memory "
                                 "starts as garbage)");
    }
    if (b.race_check && m.w_epoch == b.epoch && m.writer != tid) {
      race(b, i, "reads it after", m.writer, "wrote");
    }
  }
  void record_read(detail::Block& b, unsigned tid, Meta& m) {
    if (m.r_epoch != b.epoch) {
      m.r_epoch = b.epoch;
      m.r1 = tid;
      m.r2 = detail::kNone;
    } else if (m.r1 != tid && m.r2 == detail::kNone) {
      m.r2 = tid;
    }
  }
  void check_write(detail::Block& b, unsigned tid, std::size_t i, Meta& m) {
    if (!b.race_check) return;
    if (m.w_epoch == b.epoch && m.writer != tid) race(b, i, "writes it after", m.writer, "wrote");
    if (m.r_epoch == b.epoch) {
      const unsigned other = m.r1 != tid ? m.r1 : m.r2;
      if (other != detail::kNone) race(b, i, "writes it after", other, "read");
    }
  }
  void record_write(detail::Block& b, unsigned tid, Meta& m) {
    m.w_epoch = b.epoch;
    m.writer = tid;
  }

  detail::Block& enter() const {
    detail::Block& b = detail::current("a CR_SHARED access");
    if (b.aborted.load(std::memory_order_relaxed)) throw detail::Abort{};
    return b;
  }

  T load(std::size_t i) {
    detail::Block& b = enter();
    const unsigned tid = detail::tl_tid;
    std::lock_guard<std::mutex> lk(locks_[i % kStripes]);
    Meta& m = meta_[i];
    check_read(b, tid, i, m);
    record_read(b, tid, m);
    return data_[i];
  }
  void store(std::size_t i, T v) {
    detail::Block& b = enter();
    const unsigned tid = detail::tl_tid;
    std::lock_guard<std::mutex> lk(locks_[i % kStripes]);
    Meta& m = meta_[i];
    check_write(b, tid, i, m);
    record_write(b, tid, m);
    data_[i] = v;
  }
  template <class F>
  void modify(std::size_t i, F f) {
    detail::Block& b = enter();
    const unsigned tid = detail::tl_tid;
    std::lock_guard<std::mutex> lk(locks_[i % kStripes]);
    Meta& m = meta_[i];
    check_read(b, tid, i, m);
    check_write(b, tid, i, m);
    record_read(b, tid, m);
    record_write(b, tid, m);
    f(data_[i]);
  }

  const char* name_;
  const char* file_;
  int line_;
  std::unique_ptr<T[]> data_;
  std::unique_ptr<Meta[]> meta_;
  std::mutex locks_[kStripes];
};

}  // namespace cr::emu

// ---------------------------------------------------------------------------------------------
// Device functions.

inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  ::cr::emu::detail::syncthreads(::cr::emu::detail::Site::from(loc));
}
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location loc = std::source_location::current()) {
  ::cr::emu::detail::warp_exchange("__syncwarp", mask, 0, 0, 32,
                                   ::cr::emu::detail::Site::from(loc));
}

// Shuffles: overloads per value type, as CUDA declares them (a shared-array proxy converts).
#define CR_EMU_SHFL(T)                                                                          \
  inline T __shfl_sync(unsigned mask, T v, int src, int width = 32,                             \
                       std::source_location loc = std::source_location::current()) {            \
    using namespace ::cr::emu::detail;                                                          \
    return shuffle<T>(Shfl::Idx, mask, v, src, width, Site::from(loc));                         \
  }                                                                                             \
  inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,                   \
                           std::source_location loc = std::source_location::current()) {        \
    using namespace ::cr::emu::detail;                                                          \
    return shuffle<T>(Shfl::Xor, mask, v, lane_mask, width, Site::from(loc));                   \
  }                                                                                             \
  inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,                 \
                            std::source_location loc = std::source_location::current()) {       \
    using namespace ::cr::emu::detail;                                                          \
    return shuffle<T>(Shfl::Down, mask, v, delta, width, Site::from(loc));                      \
  }                                                                                             \
  inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32,                   \
                          std::source_location loc = std::source_location::current()) {         \
    using namespace ::cr::emu::detail;                                                          \
    return shuffle<T>(Shfl::Up, mask, v, delta, width, Site::from(loc));                        \
  }
CR_EMU_SHFL(int)
CR_EMU_SHFL(unsigned)
CR_EMU_SHFL(long)
CR_EMU_SHFL(unsigned long)
CR_EMU_SHFL(long long)
CR_EMU_SHFL(unsigned long long)
CR_EMU_SHFL(float)
CR_EMU_SHFL(double)
#undef CR_EMU_SHFL

// atomicAdd on global memory: returns the old value.
#define CR_EMU_ATOMIC_ADD(T) \
  inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
CR_EMU_ATOMIC_ADD(float)
CR_EMU_ATOMIC_ADD(double)
CR_EMU_ATOMIC_ADD(int)
CR_EMU_ATOMIC_ADD(unsigned)
CR_EMU_ATOMIC_ADD(unsigned long long)
#undef CR_EMU_ATOMIC_ADD

// bfloat16: the bits of the top half of an fp32 (conversions in core/tensor/bf16.h).
struct __nv_bfloat16 {
  unsigned short __x;
};
static_assert(sizeof(__nv_bfloat16) == 2 && std::is_trivially_copyable_v<__nv_bfloat16>);
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16{::cr::f32_to_bf16(f)}; }
inline float __bfloat162float(__nv_bfloat16 h) { return ::cr::bf16_to_f32(h.__x); }

// Math beyond <cmath>'s float functions (expf, logf, ..., INFINITY come from <math.h>).
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
