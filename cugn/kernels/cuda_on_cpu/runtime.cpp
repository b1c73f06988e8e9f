// The launcher of CUDA kernels built for the host (see runtime.h): a grid runs
// block by block, one host execution context per CUDA thread.
//
// Two schedules. Serial (the default): the block's threads are fibers on the
// launching thread and one runs at a time, the first in the thread order
// (lowest index first, or highest) among those not waiting, until it waits or
// exits; every run is deterministic, and a value read before the barrier that
// should have ordered it shows as the NaN the shared memory was filled with.
// Parallel: one host thread per CUDA thread, all running at once, for
// ThreadSanitizer, which then sees only the ordering that barriers and
// shuffles give.
//
// The rules of bar.sync and shfl.sync are enforced, not assumed: a barrier or
// a shuffle that some threads skip, that threads reach at different lines, or
// that names threads which have exited, fails the launch with a message naming
// the block, the threads and the lines; so does a block in which every thread
// left waits for another.
//
// In the checked build the kernels are compiled with outline address
// instrumentation (-fsanitize=kernel-address), whose callbacks below count the
// bytes each launch reads and writes in each device allocation and fail the
// launch on any access to an allocation's guard zones or past the end of a
// static (shared) array; they also count those bytes per line of each
// allocation, which shows the ranges a launch touched.

#include "runtime.h"

#include <ucontext.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef __SANITIZE_THREAD__
#include <sanitizer/tsan_interface.h>
// ThreadSanitizer's dynamic annotations (libtsan defines them).
extern "C" {
void AnnotateIgnoreReadsBegin(const char* file, int line);
void AnnotateIgnoreReadsEnd(const char* file, int line);
void AnnotateIgnoreWritesBegin(const char* file, int line);
void AnnotateIgnoreWritesEnd(const char* file, int line);
void AnnotateIgnoreSyncBegin(const char* file, int line);
void AnnotateIgnoreSyncEnd(const char* file, int line);
}
#endif

namespace cuda_on_cpu {

thread_local uint3 thread_index;
thread_local uint3 block_index;
uint3 block_dimensions;
uint3 grid_dimensions;

namespace {

// Thrown at a CUDA thread's next synchronisation once the launch has failed,
// so that it leaves the kernel.
struct Abort {};

enum class State { kRunning, kBarrier, kShuffle, kExited };

struct Thread {
  State state = State::kRunning;
  uint64_t shuffle_result = 0;
  std::condition_variable turn;   // parallel schedule: woken to go on
  ucontext_t context;             // serial schedule: the thread as a fiber
  std::unique_ptr<char[]> stack;
};

// The shuffle the lanes of one warp are gathering for.
struct PendingShuffle {
  bool active = false;
  unsigned mask = 0, arrived = 0;
  ShuffleKind kind = kShuffleXor;
  int size = 0, width = 0, line = 0;
  const char* file = nullptr;
  uint64_t bits[32] = {};
  int operand[32] = {};
};

const char* shuffle_name(ShuffleKind kind) {
  return kind == kShuffleXor ? "__shfl_xor_sync" : "__shfl_down_sync";
}

std::string where(const char* file, int line) {
  const char* slash = std::strrchr(file, '/');
  return std::string(slash ? slash + 1 : file) + ":" + std::to_string(line);
}

// "0-15, 17" for a sorted list of thread indices.
std::string ranges(const std::vector<int>& ids) {
  std::string text;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!text.empty()) text += ", ";
    text += std::to_string(ids[i]);
    if (j > i) text += "-" + std::to_string(ids[j]);
    i = j + 1;
  }
  return text;
}

// ThreadSanitizer sees only the ordering CUDA gives: the launcher's own locks
// and bookkeeping are hidden from it (they order everything, which would hide
// every race), and each barrier and shuffle orders its participants alone.
#ifdef __SANITIZE_THREAD__
struct Unobserved {
  Unobserved() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
  }
  ~Unobserved() {
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
};
inline void happens_before(void* sync) { __tsan_release(sync); }
inline void happens_after(void* sync) { __tsan_acquire(sync); }
#else
struct Unobserved {
  Unobserved() {}
};
inline void happens_before(void*) {}
inline void happens_after(void*) {}
#endif

struct Options {
  int block_order;   // 0 forward, 1 reversed, 2 shuffled with `seed`
  int thread_order;  // 0 lowest index first, 1 highest first (serial schedule)
  int parallel;      // 1: every thread at once
  uint64_t seed;
};

// Each CUDA thread of the serial schedule is a fiber on the launching thread.
constexpr size_t kFiberStackBytes = 256 * 1024;

class Engine {
 public:
  ~Engine() { stop_pool(); }

  // Runs the grid; returns "" or the first error.
  std::string launch(Invoke invoke, void (*kernel)(), void** args, uint3 grid, uint3 block,
                     const Options& options, const std::vector<std::pair<char*, size_t>>& shared);

  void barrier(const char* file, int line);
  uint64_t shuffle(unsigned mask, uint64_t bits, int size, ShuffleKind kind, int operand,
                   int width, const char* file, int line);
  // Records the first error; every thread leaves the kernel at its next wait.
  void fail(const std::string& message);

  static void fiber_entry(int id);

 private:
  void fail_locked(const std::string& message);
  void wait_at_barrier(const char* file, int line);
  uint64_t wait_at_shuffle(unsigned mask, uint64_t bits, int size, ShuffleKind kind, int operand,
                           int width, const char* file, int line);
  bool run_block(uint3 b, Invoke invoke, void (*kernel)(), void** args, const Options& options);
  void prepare(int threads, bool parallel);
  void stop_pool();
  void worker(int id);
  void run_thread(int id);
  void enter(int id);
  void finish(int id);
  void run_block_serial();
  void run_block_parallel(std::unique_lock<std::mutex>& lock);
  void wait_turn(int id, std::unique_lock<std::mutex>& lock);
  void started_waiting();
  void switch_to(ucontext_t* from, ucontext_t* to, const void* stack, size_t size);
  int next_runnable() const;
  std::string block_name() const;
  std::string describe_waiting() const;
  std::vector<int> threads_in(State state) const;

  std::mutex mutex_;
  std::condition_variable block_done_;
  std::vector<std::unique_ptr<Thread>> threads_;
  std::vector<PendingShuffle> warps_;
  // The parallel schedule's pool of host threads.
  std::vector<std::thread> pool_;
  bool shutdown_ = false;
  uint64_t generation_ = 0;  // blocks started, so that a worker runs each block once
  std::vector<uint64_t> started_;
  // The serial schedule's scheduler, and the stack it runs on (for ASan's fiber API).
  ucontext_t scheduler_;
  const void* scheduler_stack_ = nullptr;
  size_t scheduler_stack_size_ = 0;
  // The block being run.
  Invoke invoke_ = nullptr;
  void (*kernel_)() = nullptr;
  void** args_ = nullptr;
  uint3 block_{};
  Options options_{};
  int exited_ = 0, at_barrier_ = 0;
  const char* barrier_file_ = nullptr;
  int barrier_line_ = 0;
  bool aborted_ = false;
  std::string error_;
};

Engine& engine() {
  static Engine instance;
  return instance;
}

thread_local int current_thread = -1;

void Engine::prepare(int threads, bool parallel) {
  if (int(threads_.size()) != threads) {
    stop_pool();
    threads_.clear();
    for (int i = 0; i < threads; ++i) threads_.push_back(std::make_unique<Thread>());
    warps_.assign((threads + 31) / 32, PendingShuffle());
  }
  if (parallel && pool_.empty()) {
    shutdown_ = false;
    started_.assign(threads, generation_);
    for (int i = 0; i < threads; ++i) pool_.emplace_back(&Engine::worker, this, i);
  }
  if (!parallel) {
    for (auto& t : threads_) {
      if (!t->stack) t->stack.reset(new char[kFiberStackBytes]);
    }
  }
}

void Engine::stop_pool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shutdown_ = true;
    for (auto& t : threads_) t->turn.notify_one();
  }
  for (auto& t : pool_) t.join();
  pool_.clear();
}

int Engine::next_runnable() const {
  const int n = int(threads_.size());
  for (int k = 0; k < n; ++k) {
    const int i = options_.thread_order == 0 ? k : n - 1 - k;
    if (threads_[i]->state == State::kRunning) return i;
  }
  return -1;
}

std::vector<int> Engine::threads_in(State state) const {
  std::vector<int> ids;
  for (size_t i = 0; i < threads_.size(); ++i) {
    if (threads_[i]->state == state) ids.push_back(int(i));
  }
  return ids;
}

std::string Engine::block_name() const {
  return "block (" + std::to_string(block_.x) + ", " + std::to_string(block_.y) + ", " +
         std::to_string(block_.z) + ")";
}

std::string Engine::describe_waiting() const {
  std::string text;
  const std::vector<int> at_barrier = threads_in(State::kBarrier);
  if (!at_barrier.empty()) {
    text += "; threads " + ranges(at_barrier) + " wait at __syncthreads (" +
            where(barrier_file_, barrier_line_) + ")";
  }
  for (size_t w = 0; w < warps_.size(); ++w) {
    const PendingShuffle& s = warps_[w];
    if (!s.active) continue;
    std::vector<int> lanes, missing;
    for (int l = 0; l < 32; ++l) {
      if (s.arrived >> l & 1u) lanes.push_back(l);
      else if (s.mask >> l & 1u) missing.push_back(l);
    }
    text += "; lanes " + ranges(lanes) + " of warp " + std::to_string(w) + " wait at " +
            shuffle_name(s.kind) + " (" + where(s.file, s.line) + ") for lanes " + ranges(missing);
  }
  const std::vector<int> exited = threads_in(State::kExited);
  if (!exited.empty()) text += "; threads " + ranges(exited) + " exited";
  return text;
}

void Engine::fail(const std::string& message) {
  std::lock_guard<std::mutex> lock(mutex_);
  fail_locked(message);
}

void Engine::fail_locked(const std::string& message) {
  if (!aborted_) {
    aborted_ = true;
    error_ = block_name() + ": " + message;
  }
  for (auto& t : threads_) t->turn.notify_one();
}

void Engine::switch_to(ucontext_t* from, ucontext_t* to, const void* stack, size_t size) {
#ifdef __SANITIZE_ADDRESS__
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, stack, size);
  swapcontext(from, to);
  __sanitizer_finish_switch_fiber(fake_stack, &scheduler_stack_, &scheduler_stack_size_);
#else
  (void)stack;
  (void)size;
  swapcontext(from, to);
#endif
}

// The thread's coordinates, for the kernel and for error messages.
void Engine::enter(int id) {
  current_thread = id;
  const uint3 dims = block_dimensions;
  thread_index = {unsigned(id) % dims.x, unsigned(id) / dims.x % dims.y,
                  unsigned(id) / (dims.x * dims.y)};
  block_index = block_;
}

// Blocks the calling CUDA thread until it may run again; leaves the kernel
// (by Abort) once the launch has failed.
void Engine::wait_turn(int id, std::unique_lock<std::mutex>& lock) {
  Thread& self = *threads_[id];
  if (options_.parallel == 0) {
    lock.unlock();
    switch_to(&self.context, &scheduler_, scheduler_stack_, scheduler_stack_size_);
    lock.lock();
  } else {
    self.turn.wait(lock, [&] { return aborted_ || self.state == State::kRunning; });
  }
  if (aborted_) throw Abort();
}

// Parallel schedule: a thread has started to wait or has exited; if every
// thread now waits for another, none can go on.
void Engine::started_waiting() {
  if (options_.parallel != 0 && exited_ < int(threads_.size()) && next_runnable() < 0) {
    fail_locked("deadlock: no thread can go on" + describe_waiting());
  }
}

void Engine::barrier(const char* file, int line) {
  happens_before(&at_barrier_);  // everything before the barrier, in every thread,
  wait_at_barrier(file, line);
  happens_after(&at_barrier_);   // comes before everything after it
}

void Engine::wait_at_barrier(const char* file, int line) {
  Unobserved unobserved;
  std::unique_lock<std::mutex> lock(mutex_);
  const int id = current_thread;
  if (aborted_) throw Abort();
  // Built only for a report: barriers and shuffles are the launcher's hot path.
  const auto here = [&] { return "__syncthreads (" + where(file, line) + ")"; };
  if (exited_ > 0) {
    fail_locked(here() + " reached by thread " + std::to_string(id) + " after threads " +
                ranges(threads_in(State::kExited)) + " exited");
    throw Abort();
  }
  if (at_barrier_ > 0 && (barrier_line_ != line || std::strcmp(barrier_file_, file) != 0)) {
    fail_locked("divergent barriers: thread " + std::to_string(id) + " reached " + here() +
                " while threads " + ranges(threads_in(State::kBarrier)) +
                " wait at __syncthreads (" + where(barrier_file_, barrier_line_) + ")");
    throw Abort();
  }
  const PendingShuffle& pending = warps_[id / 32];
  if (pending.active && (pending.mask >> (id % 32) & 1u)) {
    fail_locked("thread " + std::to_string(id) + " reached " + here() +
                " while lanes of its warp wait for it at " + shuffle_name(pending.kind) + " (" +
                where(pending.file, pending.line) + ")");
    throw Abort();
  }
  barrier_file_ = file;
  barrier_line_ = line;
  threads_[id]->state = State::kBarrier;
  if (++at_barrier_ == int(threads_.size())) {
    for (auto& t : threads_) {
      t->state = State::kRunning;
      t->turn.notify_one();
    }
    at_barrier_ = 0;
  }
  started_waiting();
  wait_turn(id, lock);
}

uint64_t Engine::shuffle(unsigned mask, uint64_t bits, int size, ShuffleKind kind, int operand,
                         int width, const char* file, int line) {
  PendingShuffle* warp = &warps_[current_thread / 32];
  happens_before(warp);  // a shuffle orders the lanes of its warp, and only them
  const uint64_t result = wait_at_shuffle(mask, bits, size, kind, operand, width, file, line);
  happens_after(warp);
  return result;
}

uint64_t Engine::wait_at_shuffle(unsigned mask, uint64_t bits, int size, ShuffleKind kind,
                                 int operand, int width, const char* file, int line) {
  Unobserved unobserved;
  std::unique_lock<std::mutex> lock(mutex_);
  const int id = current_thread;
  if (aborted_) throw Abort();
  const int lane = id % 32, warp = id / 32;
  // Built only for a report: barriers and shuffles are the launcher's hot path.
  const auto here = [&] {
    return std::string(shuffle_name(kind)) + " (" + where(file, line) + ")";
  };
  const auto who = [&] {
    return "lane " + std::to_string(lane) + " of warp " + std::to_string(warp);
  };
  if (!(mask >> lane & 1u)) {
    fail_locked(who() + " calls " + here() + " with a mask that leaves it out");
    throw Abort();
  }
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    fail_locked(who() + " calls " + here() + " with width " + std::to_string(width) +
                ", not a power of two <= 32");
    throw Abort();
  }
  for (int l = 0; l < 32; ++l) {
    const int t = warp * 32 + l;
    if ((mask >> l & 1u) && (t >= int(threads_.size()) || threads_[t]->state == State::kExited)) {
      fail_locked(who() + " calls " + here() + " naming lane " + std::to_string(l) +
                  ", which has exited or does not exist");
      throw Abort();
    }
  }
  PendingShuffle& s = warps_[warp];
  if (!s.active) {
    s.active = true;
    s.mask = mask;
    s.arrived = 0;
    s.kind = kind;
    s.size = size;
    s.width = width;
    s.file = file;
    s.line = line;
  } else if (s.mask != mask || s.kind != kind || s.size != size || s.width != width ||
             s.line != line || std::strcmp(s.file, file) != 0) {
    fail_locked("divergent shuffles: " + who() + " calls " + here() + " while lanes of its warp " +
                "wait at " + shuffle_name(s.kind) + " (" + where(s.file, s.line) + ")");
    throw Abort();
  }
  s.bits[lane] = bits;
  s.operand[lane] = operand;
  s.arrived |= 1u << lane;
  threads_[id]->state = State::kShuffle;
  if (s.arrived == s.mask) {
    s.active = false;
    for (int l = 0; l < 32; ++l) {
      if (!(s.mask >> l & 1u)) continue;
      // shfl.sync's lane rules: a source past the end of the caller's segment of
      // `width` lanes gives the caller its own value.
      const int last = (l & ~(s.width - 1)) + s.width - 1;
      const int source = s.kind == kShuffleXor ? l ^ (s.operand[l] & 31) : l + s.operand[l];
      uint64_t value = s.bits[l];
      if (source <= last) {
        if (!(s.mask >> source & 1u)) {
          fail_locked("lane " + std::to_string(l) + " of warp " + std::to_string(warp) +
                      " reads lane " + std::to_string(source) + " at " + here() +
                      ", which the mask leaves out");
          throw Abort();
        }
        value = s.bits[source];
      }
      Thread& t = *threads_[warp * 32 + l];
      t.shuffle_result = value;
      t.state = State::kRunning;
      t.turn.notify_one();
    }
  }
  started_waiting();
  wait_turn(id, lock);
  return threads_[id]->shuffle_result;
}

void Engine::finish(int id) {
  happens_before(&exited_);  // the launcher sees all a block wrote
  Unobserved unobserved;
  std::lock_guard<std::mutex> lock(mutex_);
  threads_[id]->state = State::kExited;
  ++exited_;
  if (!aborted_) {
    if (at_barrier_ > 0) {
      fail_locked("thread " + std::to_string(id) + " exited while threads " +
                  ranges(threads_in(State::kBarrier)) + " wait at __syncthreads (" +
                  where(barrier_file_, barrier_line_) + ")");
    }
    const PendingShuffle& pending = warps_[id / 32];
    if (!aborted_ && pending.active && (pending.mask >> (id % 32) & 1u)) {
      fail_locked("lane " + std::to_string(id % 32) + " of warp " + std::to_string(id / 32) +
                  " exited while lanes of its warp wait for it at " +
                  shuffle_name(pending.kind) + " (" + where(pending.file, pending.line) + ")");
    }
  }
  if (exited_ == int(threads_.size())) {
    block_done_.notify_one();
  } else if (!aborted_) {
    started_waiting();
  }
}

void Engine::run_thread(int id) {
  try {
    if (!aborted_) invoke_(kernel_, args_);
  } catch (const Abort&) {
  }
  finish(id);
}

void Engine::fiber_entry(int id) {
  Engine& self = engine();
#ifdef __SANITIZE_ADDRESS__
  __sanitizer_finish_switch_fiber(nullptr, &self.scheduler_stack_, &self.scheduler_stack_size_);
#endif
  self.run_thread(id);
  // Back to the scheduler for good: this fiber is made anew for the next block.
#ifdef __SANITIZE_ADDRESS__
  __sanitizer_start_switch_fiber(nullptr, self.scheduler_stack_, self.scheduler_stack_size_);
#endif
  setcontext(&self.scheduler_);
}

// One thread at a time: always the first runnable one in the thread order.
void Engine::run_block_serial() {
  const int n = int(threads_.size());
  for (int i = 0; i < n; ++i) {
    Thread& t = *threads_[i];
    getcontext(&t.context);
    t.context.uc_stack.ss_sp = t.stack.get();
    t.context.uc_stack.ss_size = kFiberStackBytes;
    t.context.uc_link = nullptr;
    makecontext(&t.context, reinterpret_cast<void (*)()>(&Engine::fiber_entry), 1, i);
  }
  while (exited_ < n) {
    const int next = next_runnable();
    if (next < 0) {
      // Every thread left waits for another: report it, then let each leave.
      fail_locked("deadlock: no thread can go on" + describe_waiting());
      for (auto& t : threads_) {
        if (t->state != State::kExited) t->state = State::kRunning;
      }
      continue;
    }
    enter(next);
    Thread& t = *threads_[next];
    switch_to(&scheduler_, &t.context, t.stack.get(), kFiberStackBytes);
  }
  current_thread = -1;
}

void Engine::run_block_parallel(std::unique_lock<std::mutex>& lock) {
  ++generation_;
  for (auto& t : threads_) t->turn.notify_one();
  block_done_.wait(lock, [&] { return exited_ == int(threads_.size()); });
}

void Engine::worker(int id) {
  for (;;) {
    {
      Unobserved unobserved;
      std::unique_lock<std::mutex> lock(mutex_);
      threads_[id]->turn.wait(lock, [&] { return shutdown_ || started_[id] < generation_; });
      if (shutdown_) return;
      started_[id] = generation_;
      enter(id);
    }
    happens_after(&generation_);  // the block sees all the launcher wrote
    run_thread(id);
  }
}

std::string Engine::launch(Invoke invoke, void (*kernel)(), void** args, uint3 grid, uint3 block,
                           const Options& options,
                           const std::vector<std::pair<char*, size_t>>& shared) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > 1024) {
    return "block (" + std::to_string(block.x) + ", " + std::to_string(block.y) + ", " +
           std::to_string(block.z) + ") has " + std::to_string(threads) +
           " threads; CUDA allows 1 to 1024";
  }
  if (1ull * grid.x * grid.y * grid.z == 0) return "the grid has no blocks";
  prepare(int(threads), options.parallel != 0);
  block_dimensions = block;
  grid_dimensions = grid;
  std::vector<uint3> order;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) order.push_back({x, y, z});
  if (options.block_order == 1) std::reverse(order.begin(), order.end());
  if (options.block_order == 2) {
    std::shuffle(order.begin(), order.end(), std::mt19937_64(options.seed));
  }
  for (const uint3& b : order) {
    for (const auto& s : shared) std::memset(s.first, 0xff, s.second);  // NaN in every float
    happens_before(&generation_);
    if (!run_block(b, invoke, kernel, args, options)) return error_;
  }
  return "";
}

// Runs block `b`; false when it failed.
bool Engine::run_block(uint3 b, Invoke invoke, void (*kernel)(), void** args,
                       const Options& options) {
  {
    Unobserved unobserved;
    std::unique_lock<std::mutex> lock(mutex_);
    for (auto& t : threads_) t->state = State::kRunning;
    for (auto& w : warps_) w = PendingShuffle();
    exited_ = at_barrier_ = 0;
    aborted_ = false;
    invoke_ = invoke;
    kernel_ = kernel;
    args_ = args;
    block_ = b;
    options_ = options;
    if (options.parallel != 0) {
      run_block_parallel(lock);
    } else {
      lock.unlock();
      run_block_serial();
      lock.lock();
    }
  }
  happens_after(&exited_);
  return !aborted_;
}

}  // namespace

void syncthreads(const char* file, int line) { engine().barrier(file, line); }

uint64_t shuffle(unsigned mask, uint64_t bits, int size, ShuffleKind kind, int operand, int width,
                 const char* file, int line) {
  return engine().shuffle(mask, bits, size, kind, operand, width, file, line);
}

// ------------------------------------------------------------------ memory checks

namespace {

// A device allocation of the launch: its data, inside guard zones.
struct Allocation {
  uintptr_t begin, end, guarded_begin, guarded_end;
};

struct StaticArray {
  uintptr_t begin, end, redzone_end;
  std::string name;
};

// GCC's and clang's descriptor of an instrumented global (ASan ABI version 8).
struct AsanGlobal {
  const void* begin;
  size_t size;
  size_t size_with_redzone;
  const char* name;
  const char* module_name;
  size_t has_dynamic_init;
  void* location;
  uintptr_t odr_indicator;
};

std::vector<Allocation> allocations;
uint64_t* bytes_read = nullptr;
uint64_t* bytes_written = nullptr;
// The same bytes per line of 2^line_shift bytes of each allocation: allocation i's
// lines start at line_offsets[i] in line_read and line_written.
int line_shift = 12;
const uint64_t* line_offsets = nullptr;
uint64_t* line_read = nullptr;
uint64_t* line_written = nullptr;
// Filled by the instrumentation's constructors, which may run before this unit's
// own dynamic initialisation: constructed on first use.
std::vector<StaticArray>& static_arrays() {
  static std::vector<StaticArray> arrays;
  return arrays;
}
uintptr_t statics_begin = UINTPTR_MAX, statics_end = 0;

std::string hex(uintptr_t value) {
  char text[32];
  std::snprintf(text, sizeof text, "0x%llx", (unsigned long long)value);
  return text;
}

std::string thread_name() {
  return "thread " + std::to_string(threadIdx.x) + " (" + std::to_string(current_thread) + ")";
}

[[maybe_unused]] void access(uintptr_t address, size_t size, bool store) {
  if (current_thread < 0 || size == 0) return;  // not a CUDA thread
  const uintptr_t end = address + size;
  const char* kind = store ? "store" : "load";
  for (size_t i = 0; i < allocations.size(); ++i) {
    const Allocation& a = allocations[i];
    if (end <= a.guarded_begin || address >= a.guarded_end) continue;
    if (address >= a.begin && end <= a.end) {
      __atomic_fetch_add(store ? &bytes_written[i] : &bytes_read[i], size, __ATOMIC_RELAXED);
      // Attributed to the line of its first byte (aligned accesses never cross a line).
      const uint64_t line = line_offsets[i] + ((address - a.begin) >> line_shift);
      __atomic_fetch_add(store ? &line_written[line] : &line_read[line], size, __ATOMIC_RELAXED);
      return;
    }
    const long long offset = (long long)(address - a.begin);
    engine().fail(thread_name() + ": global " + kind + " of " + std::to_string(size) +
                  " bytes at byte " + std::to_string(offset) + " of allocation " +
                  std::to_string(i) + " (" + std::to_string(a.end - a.begin) +
                  " bytes): outside it");
    return;
  }
  if (end <= statics_begin || address >= statics_end) return;
  for (const StaticArray& s : static_arrays()) {
    if (end > s.end && address < s.redzone_end && address >= s.begin) {
      engine().fail(thread_name() + ": " + kind + " of " + std::to_string(size) + " bytes at " +
                    hex(address) + ", byte " + std::to_string(address - s.begin) + " of '" +
                    s.name + "' (" + std::to_string(s.end - s.begin) + " bytes): past its end");
      return;
    }
  }
}

}  // namespace
}  // namespace cuda_on_cpu

using cuda_on_cpu::access;

// The callbacks of outline address instrumentation (checked build only: the
// sanitizer builds bring their own).
#ifdef CUDA_ON_CPU_CHECKED
extern "C" {
#define CUDA_ON_CPU_ACCESS(n)                                                  \
  void __asan_load##n##_noabort(uintptr_t address) { access(address, n, false); } \
  void __asan_store##n##_noabort(uintptr_t address) { access(address, n, true); }
CUDA_ON_CPU_ACCESS(1)
CUDA_ON_CPU_ACCESS(2)
CUDA_ON_CPU_ACCESS(4)
CUDA_ON_CPU_ACCESS(8)
CUDA_ON_CPU_ACCESS(16)
void __asan_loadN_noabort(uintptr_t address, size_t size) { access(address, size, false); }
void __asan_storeN_noabort(uintptr_t address, size_t size) { access(address, size, true); }
void __asan_handle_no_return() {}

void __asan_register_globals(cuda_on_cpu::AsanGlobal* globals, size_t count) {
  using namespace cuda_on_cpu;
  for (size_t i = 0; i < count; ++i) {
    const AsanGlobal& g = globals[i];
    if (g.name[0] == '*') continue;  // a string literal
    const uintptr_t begin = uintptr_t(g.begin);
    static_arrays().push_back({begin, begin + g.size, begin + g.size_with_redzone, g.name});
    statics_begin = std::min(statics_begin, begin);
    statics_end = std::max(statics_end, begin + g.size_with_redzone);
  }
}
void __asan_unregister_globals(cuda_on_cpu::AsanGlobal*, size_t) {}
}
#endif

// ------------------------------------------------------------------ the C interface

extern "C" {

// Launches `kernel` (through `invoke`, which unpacks `args` into its parameters).
// `memory` holds 4 addresses per device allocation: data begin and end, guarded
// begin and end; bytes read and written in each are added to `read` and
// `written`, and per line of 2^`line_shift` bytes to `lines_read` and
// `lines_written`, where allocation i's lines start at `line_offsets[i]`.
// `shared` holds (address, size) pairs filled with NaN before each block.
// Returns 0, or 1 with the error in `error`.
int cuda_on_cpu_launch(cuda_on_cpu::Invoke invoke, void (*kernel)(), void** args,
                       const unsigned* grid, const unsigned* block, int block_order,
                       int thread_order, int parallel, uint64_t seed, const uint64_t* memory,
                       int allocation_count, uint64_t* read, uint64_t* written,
                       int line_shift, const uint64_t* line_offsets, uint64_t* lines_read,
                       uint64_t* lines_written, const uint64_t* shared, int shared_count,
                       char* error, size_t error_size) {
  using namespace cuda_on_cpu;
  static std::mutex one_launch_at_a_time;
  std::lock_guard<std::mutex> lock(one_launch_at_a_time);
  allocations.clear();
  for (int i = 0; i < allocation_count; ++i) {
    const uint64_t* m = memory + 4 * i;
    allocations.push_back({uintptr_t(m[0]), uintptr_t(m[1]), uintptr_t(m[2]), uintptr_t(m[3])});
  }
  bytes_read = read;
  bytes_written = written;
  cuda_on_cpu::line_shift = line_shift;
  cuda_on_cpu::line_offsets = line_offsets;
  cuda_on_cpu::line_read = lines_read;
  cuda_on_cpu::line_written = lines_written;
  std::vector<std::pair<char*, size_t>> shared_arrays;
  for (int i = 0; i < shared_count; ++i) {
    shared_arrays.emplace_back(reinterpret_cast<char*>(uintptr_t(shared[2 * i])),
                               size_t(shared[2 * i + 1]));
  }
  const Options options = {block_order, thread_order, parallel, seed};
  const std::string message =
      engine().launch(invoke, kernel, args, {grid[0], grid[1], grid[2]},
                      {block[0], block[1], block[2]}, options, shared_arrays);
  allocations.clear();
  if (message.empty()) return 0;
  std::snprintf(error, error_size, "%s", message.c_str());
  return 1;
}

}  // extern "C"
