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
// A launch with thread-block clusters (sm_90) runs a cluster at a time, all its
// blocks' threads as fibers of the serial schedule (the parallel schedule takes
// no clusters): thread i of the launcher is thread i % T of the cluster's block
// i / T, T threads a block (whole warps). One block's shared memory lives in the
// static arrays at a time, the block of the thread running; the others' wait in
// a save area, where distributed shared memory (__cluster_map_shared_rank) maps
// their addresses, so that every thread sees its own block's arrays at their
// addresses and another block's at the address mapped for it.
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
// static (shared) array or of another block's shared array, or to the shared
// memory of a block of the cluster that has exited; they also count those bytes
// per line of each allocation, which shows the ranges a launch touched.

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
uint3 cluster_dimensions = {1, 1, 1};

namespace {

// Thrown at a CUDA thread's next synchronisation once the launch has failed,
// so that it leaves the kernel.
struct Abort {};

enum class State { kRunning, kBarrier, kShuffle, kClusterBarrier, kExited };

struct Thread {
  State state = State::kRunning;
  uint64_t shuffle_result = 0;
  bool arrived = false;          // at the cluster barrier, and not yet waited
  uint64_t arrival_phase = 0;    // the cluster barrier's phase it arrived in
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

std::string hex_address(const void* address) {
  char text[32];
  std::snprintf(text, sizeof text, "%p", address);
  return text;
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

// __syncthreads of one block of the cluster.
struct BlockBarrier {
  int waiting = 0, exited = 0;
  const char* file = nullptr;
  int line = 0;
};

// Each CUDA thread of the serial schedule is a fiber on the launching thread.
constexpr size_t kFiberStackBytes = 256 * 1024;

class Engine {
 public:
  ~Engine() { stop_pool(); }

  // Runs the grid; returns "" or the first error.
  std::string launch(Invoke invoke, void (*kernel)(), void** args, uint3 grid, uint3 block,
                     uint3 cluster, const Options& options,
                     const std::vector<std::pair<char*, size_t>>& shared);

  void barrier(const char* file, int line);
  void cluster_arrive(const char* file, int line);
  void cluster_wait(const char* file, int line);
  void* map_shared(const void* address, unsigned rank, const char* file, int line);
  // For the memory checks: whether [address, address + size) lies in the save area
  // of the cluster's shared memory, checked (and failed) if so.
  bool check_saved(uintptr_t address, size_t size, bool store);
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
  bool run_cluster(uint3 origin, Invoke invoke, void (*kernel)(), void** args,
                   const Options& options);
  void make_resident(int rank);
  // The shared array (index into shared_) and the offset in it of an address in
  // the static arrays or the save area, and the block whose memory that is; false
  // when it is in neither.
  bool locate_shared(uintptr_t address, size_t* array, size_t* offset, int* rank) const;
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
  std::vector<int> threads_in(State state, int rank = -1) const;

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
  // The cluster being run: cluster_.x * .y * .z blocks (one without clusters) of
  // block_threads_ threads, the first of them block origin_.
  Invoke invoke_ = nullptr;
  void (*kernel_)() = nullptr;
  void** args_ = nullptr;
  uint3 origin_{};
  uint3 cluster_{1, 1, 1};
  int block_threads_ = 0;
  Options options_{};
  int exited_ = 0;
  std::vector<BlockBarrier> blocks_;
  // The cluster barrier: arrivals in the current phase.
  int cluster_arrived_ = 0;
  uint64_t cluster_phase_ = 0;
  const char* cluster_file_ = nullptr;
  int cluster_line_ = 0;
  // Shared memory: the static arrays, and every block's copy of them in the save
  // area (the arrays one after another, 64 bytes apart), of which the resident
  // block's is stale while it runs.
  const std::vector<std::pair<char*, size_t>>* shared_ = nullptr;
  std::vector<size_t> saved_offsets_;
  size_t saved_stride_ = 0;
  std::vector<char> saved_;
  int resident_ = 0;
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

// The threads in `state`, of block `rank` of the cluster (-1: of every block).
std::vector<int> Engine::threads_in(State state, int rank) const {
  std::vector<int> ids;
  for (size_t i = 0; i < threads_.size(); ++i) {
    if (threads_[i]->state == state && (rank < 0 || int(i) / block_threads_ == rank)) {
      ids.push_back(int(i));
    }
  }
  return ids;
}

std::string coordinates(uint3 b) {
  return "(" + std::to_string(b.x) + ", " + std::to_string(b.y) + ", " + std::to_string(b.z) +
         ")";
}

std::string Engine::block_name() const {
  if (blocks_.size() == 1) return "block " + coordinates(origin_);
  const uint3 last = {origin_.x + cluster_.x - 1, origin_.y + cluster_.y - 1,
                      origin_.z + cluster_.z - 1};
  return "cluster of blocks " + coordinates(origin_) + " to " + coordinates(last);
}

std::string Engine::describe_waiting() const {
  std::string text;
  for (size_t rank = 0; rank < blocks_.size(); ++rank) {
    const std::vector<int> at_barrier = threads_in(State::kBarrier, int(rank));
    if (!at_barrier.empty()) {
      text += "; threads " + ranges(at_barrier) + " wait at __syncthreads (" +
              where(blocks_[rank].file, blocks_[rank].line) + ")";
    }
  }
  const std::vector<int> at_cluster_barrier = threads_in(State::kClusterBarrier);
  if (!at_cluster_barrier.empty()) {
    text += "; threads " + ranges(at_cluster_barrier) + " wait at the cluster barrier (" +
            where(cluster_file_, cluster_line_) + ")";
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
  const unsigned local = unsigned(id % block_threads_), rank = unsigned(id / block_threads_);
  thread_index = {local % dims.x, local / dims.x % dims.y, local / (dims.x * dims.y)};
  block_index = {origin_.x + rank % cluster_.x, origin_.y + rank / cluster_.x % cluster_.y,
                 origin_.z + rank / (cluster_.x * cluster_.y)};
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
  BlockBarrier* block = &blocks_[current_thread / block_threads_];
  happens_before(block);  // everything before the barrier, in every thread,
  wait_at_barrier(file, line);
  happens_after(block);   // comes before everything after it
}

void Engine::wait_at_barrier(const char* file, int line) {
  Unobserved unobserved;
  std::unique_lock<std::mutex> lock(mutex_);
  const int id = current_thread;
  if (aborted_) throw Abort();
  // Built only for a report: barriers and shuffles are the launcher's hot path.
  const auto here = [&] { return "__syncthreads (" + where(file, line) + ")"; };
  const int rank = id / block_threads_;
  BlockBarrier& block = blocks_[rank];
  if (block.exited > 0) {
    fail_locked(here() + " reached by thread " + std::to_string(id) + " after threads " +
                ranges(threads_in(State::kExited, rank)) + " exited");
    throw Abort();
  }
  if (block.waiting > 0 && (block.line != line || std::strcmp(block.file, file) != 0)) {
    fail_locked("divergent barriers: thread " + std::to_string(id) + " reached " + here() +
                " while threads " + ranges(threads_in(State::kBarrier, rank)) +
                " wait at __syncthreads (" + where(block.file, block.line) + ")");
    throw Abort();
  }
  const PendingShuffle& pending = warps_[id / 32];
  if (pending.active && (pending.mask >> (id % 32) & 1u)) {
    fail_locked("thread " + std::to_string(id) + " reached " + here() +
                " while lanes of its warp wait for it at " + shuffle_name(pending.kind) + " (" +
                where(pending.file, pending.line) + ")");
    throw Abort();
  }
  block.file = file;
  block.line = line;
  threads_[id]->state = State::kBarrier;
  if (++block.waiting == block_threads_) {
    for (int i = rank * block_threads_; i < (rank + 1) * block_threads_; ++i) {
      threads_[i]->state = State::kRunning;
      threads_[i]->turn.notify_one();
    }
    block.waiting = 0;
  }
  started_waiting();
  wait_turn(id, lock);
}

// barrier.cluster.arrive: counts the thread in, and lets the cluster's waiting
// threads go on once every thread of the cluster has arrived.
void Engine::cluster_arrive(const char* file, int line) {
  std::unique_lock<std::mutex> lock(mutex_);
  const int id = current_thread;
  if (aborted_) throw Abort();
  Thread& self = *threads_[id];
  if (self.arrived) {
    fail_locked("thread " + std::to_string(id) + " arrives at the cluster barrier (" +
                where(file, line) + ") again before waiting at it");
    throw Abort();
  }
  self.arrived = true;
  self.arrival_phase = cluster_phase_;
  cluster_file_ = file;
  cluster_line_ = line;
  if (++cluster_arrived_ == int(threads_.size())) {
    cluster_arrived_ = 0;
    ++cluster_phase_;
    for (auto& t : threads_) {
      if (t->state == State::kClusterBarrier) t->state = State::kRunning;
    }
  }
}

// barrier.cluster.wait: until every thread of the cluster has arrived in the
// phase this thread arrived in.
void Engine::cluster_wait(const char* file, int line) {
  std::unique_lock<std::mutex> lock(mutex_);
  const int id = current_thread;
  if (aborted_) throw Abort();
  Thread& self = *threads_[id];
  if (!self.arrived) {
    fail_locked("thread " + std::to_string(id) + " waits at the cluster barrier (" +
                where(file, line) + ") without having arrived at it");
    throw Abort();
  }
  self.arrived = false;
  if (cluster_phase_ > self.arrival_phase) return;
  self.state = State::kClusterBarrier;
  wait_turn(id, lock);
}

bool Engine::locate_shared(uintptr_t address, size_t* array, size_t* offset, int* rank) const {
  const std::vector<std::pair<char*, size_t>>& shared = *shared_;
  for (size_t i = 0; i < shared.size(); ++i) {
    const uintptr_t begin = uintptr_t(shared[i].first);
    if (address >= begin && address < begin + shared[i].second) {
      *array = i;
      *offset = address - begin;
      *rank = current_thread / block_threads_;
      return true;
    }
  }
  const uintptr_t saved = uintptr_t(saved_.data());
  if (address < saved || address >= saved + saved_.size()) return false;
  *rank = int((address - saved) / saved_stride_);
  const size_t within = (address - saved) % saved_stride_;
  for (size_t i = 0; i < shared.size(); ++i) {
    if (within >= saved_offsets_[i] && within < saved_offsets_[i] + shared[i].second) {
      *array = i;
      *offset = within - saved_offsets_[i];
      return true;
    }
  }
  return false;
}

// __cluster_map_shared_rank: the address in block `rank`'s shared memory of what
// `address` is in the shared memory of the block it belongs to.
void* Engine::map_shared(const void* address, unsigned rank, const char* file, int line) {
  const int id = current_thread;
  const auto here = [&] { return "__cluster_map_shared_rank (" + where(file, line) + ")"; };
  if (rank >= blocks_.size()) {
    fail("thread " + std::to_string(id) + " maps shared memory of block rank " +
         std::to_string(rank) + " at " + here() + "; the cluster has " +
         std::to_string(blocks_.size()) + " blocks");
    throw Abort();
  }
  size_t array = 0, offset = 0;
  int owner = 0;
  if (!locate_shared(uintptr_t(address), &array, &offset, &owner)) {
    fail("thread " + std::to_string(id) + " maps " + hex_address(address) + " at " + here() +
         ", which is not shared memory");
    throw Abort();
  }
  if (int(rank) == id / block_threads_) return (*shared_)[array].first + offset;
  return saved_.data() + rank * saved_stride_ + saved_offsets_[array] + offset;
}

bool Engine::check_saved(uintptr_t address, size_t size, bool store) {
  const uintptr_t saved = uintptr_t(saved_.data());
  if (address >= saved + saved_.size() || address + size <= saved) return false;
  size_t array = 0, offset = 0;
  int rank = 0;
  const char* kind = store ? "store" : "load";
  const std::string who = "thread " + std::to_string(current_thread);
  if (!locate_shared(address, &array, &offset, &rank) ||
      offset + size > (*shared_)[array].second) {
    fail(who + ": distributed shared memory " + kind + " of " + std::to_string(size) +
         " bytes at " + hex_address(reinterpret_cast<const void*>(address)) +
         ": past the end of a shared array of block rank " +
         std::to_string((address - saved) / saved_stride_));
  } else if (blocks_[rank].exited == block_threads_) {
    fail(who + ": distributed shared memory " + kind + " of block rank " + std::to_string(rank) +
         ", whose threads have all exited (its shared memory is gone)");
  }
  return true;
}

// Puts block `rank`'s shared memory in the static arrays, and the resident
// block's in its place in the save area.
void Engine::make_resident(int rank) {
  if (rank == resident_) return;
  const std::vector<std::pair<char*, size_t>>& shared = *shared_;
  for (size_t i = 0; i < shared.size(); ++i) {
    std::memcpy(&saved_[resident_ * saved_stride_ + saved_offsets_[i]], shared[i].first,
                shared[i].second);
    std::memcpy(shared[i].first, &saved_[rank * saved_stride_ + saved_offsets_[i]],
                shared[i].second);
  }
  resident_ = rank;
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
  const int rank = id / block_threads_;
  BlockBarrier& block = blocks_[rank];
  ++block.exited;
  if (!aborted_) {
    if (block.waiting > 0) {
      fail_locked("thread " + std::to_string(id) + " exited while threads " +
                  ranges(threads_in(State::kBarrier, rank)) + " wait at __syncthreads (" +
                  where(block.file, block.line) + ")");
    }
    if (!aborted_ && cluster_arrived_ > 0 && !threads_[id]->arrived) {
      fail_locked("thread " + std::to_string(id) + " exited while threads " +
                  ranges(threads_in(State::kClusterBarrier)) + " wait at the cluster barrier (" +
                  where(cluster_file_, cluster_line_) + ")");
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
    make_resident(next / block_threads_);
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
                           uint3 cluster, const Options& options,
                           const std::vector<std::pair<char*, size_t>>& shared) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > 1024) {
    return "block " + coordinates(block) + " has " + std::to_string(threads) +
           " threads; CUDA allows 1 to 1024";
  }
  if (1ull * grid.x * grid.y * grid.z == 0) return "the grid has no blocks";
  const unsigned blocks = cluster.x * cluster.y * cluster.z;
  if (blocks == 0 || grid.x % cluster.x || grid.y % cluster.y || grid.z % cluster.z) {
    return "the grid " + coordinates(grid) + " is not made of clusters " + coordinates(cluster);
  }
  if (blocks > 1 && options.parallel != 0) return "clusters run in the serial schedule only";
  if (blocks > 1 && threads % 32 != 0) {
    return "a cluster's blocks must be whole warps; block " + coordinates(block) + " has " +
           std::to_string(threads) + " threads";
  }
  block_threads_ = int(threads);
  cluster_ = cluster;
  prepare(int(threads * blocks), options.parallel != 0);
  block_dimensions = block;
  grid_dimensions = grid;
  cluster_dimensions = cluster;
  shared_ = &shared;
  saved_offsets_.clear();
  saved_stride_ = 0;
  for (const auto& s : shared) {
    saved_offsets_.push_back(saved_stride_);
    saved_stride_ += (s.second + 15) / 16 * 16 + 64;  // a gap between arrays, for the checks
  }
  saved_.assign(blocks > 1 ? blocks * saved_stride_ : 0, 0);
  std::vector<uint3> order;
  for (unsigned z = 0; z < grid.z; z += cluster.z)
    for (unsigned y = 0; y < grid.y; y += cluster.y)
      for (unsigned x = 0; x < grid.x; x += cluster.x) order.push_back({x, y, z});
  if (options.block_order == 1) std::reverse(order.begin(), order.end());
  if (options.block_order == 2) {
    std::shuffle(order.begin(), order.end(), std::mt19937_64(options.seed));
  }
  std::string error;
  for (const uint3& origin : order) {
    // NaN in every float: in the static arrays, and in every other block's copy.
    for (const auto& s : shared) std::memset(s.first, 0xff, s.second);
    if (!saved_.empty()) std::memset(saved_.data(), 0xff, saved_.size());
    resident_ = 0;
    happens_before(&generation_);
    if (!run_cluster(origin, invoke, kernel, args, options)) {
      error = error_;
      break;
    }
  }
  saved_.clear();
  shared_ = nullptr;
  return error;
}

// Runs the cluster of blocks from `origin`; false when it failed.
bool Engine::run_cluster(uint3 origin, Invoke invoke, void (*kernel)(), void** args,
                         const Options& options) {
  {
    Unobserved unobserved;
    std::unique_lock<std::mutex> lock(mutex_);
    for (auto& t : threads_) {
      t->state = State::kRunning;
      t->arrived = false;
    }
    for (auto& w : warps_) w = PendingShuffle();
    blocks_.assign(cluster_.x * cluster_.y * cluster_.z, BlockBarrier());
    exited_ = cluster_arrived_ = 0;
    cluster_phase_ = 0;
    aborted_ = false;
    invoke_ = invoke;
    kernel_ = kernel;
    args_ = args;
    origin_ = origin;
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

void cluster_arrive(const char* file, int line) { engine().cluster_arrive(file, line); }

void cluster_wait(const char* file, int line) { engine().cluster_wait(file, line); }

void* cluster_map_shared_rank(const void* address, unsigned rank, const char* file, int line) {
  return engine().map_shared(address, rank, file, line);
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
  if (engine().check_saved(address, size, store)) return;
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

void check_vector_access(const void* address, size_t bytes, bool store) {
  const uintptr_t at = uintptr_t(address);
  if (at % bytes == 0) return;
  std::string where = hex(at);
  for (size_t i = 0; i < allocations.size(); ++i) {
    if (at >= allocations[i].begin && at < allocations[i].end) {
      where = "byte " + std::to_string(at - allocations[i].begin) + " of allocation " +
              std::to_string(i);
    }
  }
  engine().fail(thread_name() + ": misaligned " + (store ? "store" : "load") + " of a " +
                std::to_string(bytes) + "-byte vector at " + where);
}

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

// Launches `kernel` (through `invoke`, which unpacks `args` into its parameters)
// over `grid` blocks of `block` threads, in clusters of `cluster` blocks.
// `memory` holds 4 addresses per device allocation: data begin and end, guarded
// begin and end; bytes read and written in each are added to `read` and
// `written`, and per line of 2^`line_shift` bytes to `lines_read` and
// `lines_written`, where allocation i's lines start at `line_offsets[i]`.
// `shared` holds (address, size) pairs filled with NaN before each block.
// Returns 0, or 1 with the error in `error`.
int cuda_on_cpu_launch(cuda_on_cpu::Invoke invoke, void (*kernel)(), void** args,
                       const unsigned* grid, const unsigned* block, const unsigned* cluster,
                       int block_order,
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
                      {block[0], block[1], block[2]}, {cluster[0], cluster[1], cluster[2]},
                      options, shared_arrays);
  allocations.clear();
  if (message.empty()) return 0;
  std::snprintf(error, error_size, "%s", message.c_str());
  return 1;
}

}  // extern "C"
