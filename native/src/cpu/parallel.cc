#include "cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tessera::cpu {
namespace {

thread_local bool tInsidePool = false;

// One parallel-for in flight. Workers take a reference to the job under the lock and claim
// its chunks from the job's own counter, so a worker that wakes late can never claim chunks
// of a later job with a stale count (each job owns its counter and its completion count).
struct Job {
  const std::function<void(int64_t)>* body;
  int64_t chunks;
  std::atomic<int64_t> next{0};
  int64_t done = 0;  // guarded by Pool::mu_
};

class Pool {
 public:
  explicit Pool(int n) : size_(n) {
    for (int i = 1; i < n; ++i) std::thread([this] { Work(); }).detach();
  }
  int size() const { return size_; }

  void Run(int64_t chunks, const std::function<void(int64_t)>& body) {
    std::lock_guard<std::mutex> submit(submitMu_);  // one job at a time (several JS threads may call in)
    auto job = std::make_shared<Job>();
    job->body = &body;
    job->chunks = chunks;
    {
      std::lock_guard<std::mutex> lk(mu_);
      current_ = job;
      ++generation_;
    }
    cv_.notify_all();
    tInsidePool = true;
    Drain(*job);
    tInsidePool = false;
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [&] { return job->done == job->chunks; });
    current_.reset();
  }

 private:
  void Drain(Job& job) {
    int64_t did = 0;
    for (;;) {
      int64_t c = job.next.fetch_add(1);
      if (c >= job.chunks) break;
      (*job.body)(c);
      ++did;
    }
    if (did) {
      std::lock_guard<std::mutex> lk(mu_);
      job.done += did;
      if (job.done == job.chunks) done_.notify_all();
    }
  }

  void Work() {
    tInsidePool = true;
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_ != seen && current_ != nullptr; });
        seen = generation_;
        job = current_;
      }
      Drain(*job);
    }
  }

  int size_;
  std::mutex submitMu_, mu_;
  std::condition_variable cv_, done_;
  std::shared_ptr<Job> current_;
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
