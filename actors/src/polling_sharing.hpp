// actors/src/polling_sharing.hpp: the CAF scheduler policy of an endpoint's
// actor system (internal).
//
// CAF 0.17's work_sharing (one central queue, workers wait on a condition
// variable), with one change: a worker that finds the queue empty polls it
// for up to `poll_for` (yielding the CPU between looks) before it sleeps,
// and only one worker at a time polls. A message the gateway hands over
// while a worker polls is taken without a futex wake-up (on a VM, waking a
// sleeping thread on an idle vCPU costs microseconds: a request/reply
// between processes pays it at every hop). An idle host's one poller gives
// up after `poll_for` and sleeps as before; the cost is up to `poll_for` of
// a yielding thread per idle gap (a host whose messages come less than
// `poll_for` apart keeps one worker polling between them).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <list>
#include <mutex>
#include <thread>

#include <caf/policy/unprofiled.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>

namespace mpx::actors::detail {

class polling_sharing : public caf::policy::unprofiled {
 public:
  static constexpr std::chrono::microseconds poll_for{50};

  struct coordinator_data {
    explicit coordinator_data(caf::scheduler::abstract_coordinator*) {}
    std::list<caf::resumable*> queue;  // under lock
    std::mutex lock;
    std::condition_variable cv;
    unsigned sleeping = 0;              // workers in cv.wait, under lock
    std::atomic<std::size_t> queued{0};  // queue.size(), for the poller's lock-free look
    std::atomic<bool> polling{false};   // a worker polls
  };
  struct worker_data {
    explicit worker_data(caf::scheduler::abstract_coordinator*) {}
  };

  template <class Coordinator>
  void enqueue(Coordinator* self, caf::resumable* job) {
    auto& data = d(self);
    std::list<caf::resumable*> node{job};  // allocated outside the lock, spliced in it
    bool wake = false;
    {
      std::lock_guard guard(data.lock);
      data.queue.splice(data.queue.end(), node);
      const std::size_t queued = data.queued.fetch_add(1, std::memory_order_release) + 1;
      // A polling worker takes one job; a sleeper is woken for any more.
      wake = data.sleeping > 0 && (!data.polling.load(std::memory_order_acquire) || queued > 1);
    }
    if (wake) data.cv.notify_one();
  }
  template <class Coordinator>
  void central_enqueue(Coordinator* self, caf::resumable* job) {
    enqueue(self, job);
  }
  template <class Worker>
  void external_enqueue(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }
  template <class Worker>
  void internal_enqueue(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }
  template <class Worker>
  void resume_job_later(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }

  template <class Worker>
  caf::resumable* dequeue(Worker* self) {
    auto& data = d(self->parent());
    if (data.queued.load(std::memory_order_acquire) == 0 && !data.polling.exchange(true, std::memory_order_acq_rel)) {
      const auto until = std::chrono::steady_clock::now() + poll_for;
      while (data.queued.load(std::memory_order_acquire) == 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::yield();
      data.polling.store(false, std::memory_order_release);
    }
    std::unique_lock guard(data.lock);
    ++data.sleeping;
    data.cv.wait(guard, [&] { return !data.queue.empty(); });
    --data.sleeping;
    caf::resumable* job = data.queue.front();
    data.queue.pop_front();
    data.queued.fetch_sub(1, std::memory_order_relaxed);
    return job;
  }

  template <class Worker, class UnaryFunction>
  void foreach_resumable(Worker*, UnaryFunction) {}

  template <class Coordinator, class UnaryFunction>
  void foreach_central_resumable(Coordinator* self, UnaryFunction f) {
    auto& data = d(self);
    std::unique_lock guard(data.lock);
    while (!data.queue.empty()) {
      caf::resumable* job = data.queue.front();
      data.queue.pop_front();
      data.queued.fetch_sub(1, std::memory_order_relaxed);
      f(job);
    }
  }
};

}  // namespace mpx::actors::detail
