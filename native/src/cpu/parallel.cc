#include "cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace tessera::cpu {
namespace {

thread_local bool tInsidePool = false;

class Pool {
 public:
  explicit Pool(int n) : size_(n) {
    for (int i = 1; i < n; ++i) std::thread([this] { Work(); }).detach();
  }
  int size() const { return size_; }

  void Run(int64_t chunks, const std::function<void(int64_t)>& body) {
    std::lock_guard<std::mutex> submit(submitMu_);  // one job at a time (several JS threads may call in)
    {
      std::lock_guard<std::mutex> lk(mu_);
      body_ = &body;
      chunks_ = chunks;
      next_.store(0);
      pending_ = chunks;
      ++generation_;
    }
    cv_.notify_all();
    tInsidePool = true;
    Drain();
    tInsidePool = false;
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [this] { return pending_ == 0; });
    body_ = nullptr;
  }

 private:
  void Drain() {
    int64_t did = 0;
    for (;;) {
      int64_t c = next_.fetch_add(1);
      if (c >= chunks_) break;
      (*body_)(c);
      ++did;
    }
    if (did) {
      std::lock_guard<std::mutex> lk(mu_);
      pending_ -= did;
      if (pending_ == 0) done_.notify_all();
    }
  }

  void Work() {
    tInsidePool = true;
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_ != seen && body_ != nullptr; });
        seen = generation_;
      }
      Drain();
    }
  }

  int size_;
  std::mutex submitMu_, mu_;
  std::condition_variable cv_, done_;
  const std::function<void(int64_t)>* body_ = nullptr;
  int64_t chunks_ = 0, pending_ = 0;
  std::atomic<int64_t> next_{0};
  uint64_t generation_ = 0;
};

int ThreadsFromEnv() {
  if (const char* s = std::getenv("TESSERA_CPU_THREADS")) {
    int n = std::atoi(s);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

Pool& ThePool() {
  // Never destroyed: its detached workers block on the condition variable until exit.
  static Pool* pool = new Pool(ThreadsFromEnv());
  return *pool;
}

}  // namespace

int NumThreads() { return ThePool().size(); }

void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  Pool& pool = ThePool();
  int64_t maxChunks = (n + grain - 1) / grain;
  int64_t chunks = std::min<int64_t>(maxChunks, static_cast<int64_t>(pool.size()) * 4);
  if (chunks <= 1 || pool.size() == 1 || tInsidePool) {
    fn(0, n);
    return;
  }
  int64_t per = (n + chunks - 1) / chunks;
  chunks = (n + per - 1) / per;
  // An exception must not escape a worker thread (that would terminate the process): the
  // first one is kept, the remaining chunks are skipped, and it is rethrown to the caller.
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  std::mutex errorMu;
  std::function<void(int64_t)> body = [&](int64_t c) {
    if (failed.load(std::memory_order_relaxed)) return;
    int64_t b = c * per;
    try {
      fn(b, std::min(n, b + per));
    } catch (...) {
      std::lock_guard<std::mutex> lk(errorMu);
      if (!error) error = std::current_exception();
      failed = true;
    }
  };
  pool.Run(chunks, body);
  if (error) std::rethrow_exception(error);
}

}  // namespace tessera::cpu
