// mpx/barrier.hpp: Barrier across processes, as multiprocessing.Barrier.
//
//     mpx::Barrier barrier(4);            // before Process::start()
//     std::size_t i = barrier.wait();     // in each of 4 processes
//
// wait() blocks until `parties` callers (threads of any processes sharing it)
// have called it, then releases them all and returns each a distinct index
// in [0, parties). The barrier is then ready for the next round. With an
// action, the last caller to arrive runs it before the others are released
// (if it throws, the barrier breaks and the exception propagates).
// wait(timeout) breaks the barrier when the timeout expires (zero or
// negative: at once, unless the caller is the last to arrive; as Python,
// docs/queues-and-pipes.md, "Timeouts"). Barrier(parties, action, timeout)
// gives a default timeout (Python's): a wait() without its own uses it, and
// its expiry breaks the barrier for every waiter. A broken barrier
// makes every current and future wait() throw BrokenBarrierError until
// reset(); abort() breaks it on purpose. A party that dies is not detected:
// use a timeout. Copies share one barrier; the action is per handle (it runs
// in the process of the last arriver). parties in [1, 65535], else SyncError.
// Wait path: FUTEX_WAIT on one shared word holding generation and count.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <tuple>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/sync_handle.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {

class BrokenBarrierError : public SyncError {
 public:
  using SyncError::SyncError;
};

namespace detail {
struct BarrierState;
}

class Barrier : public detail::PassedToChild<Barrier> {
 public:
  using Timeout = std::chrono::nanoseconds;
  // timeout: the default of wait() (none: wait() waits forever). Like the
  // action, it belongs to this handle and its copies (forked children too).
  explicit Barrier(std::size_t parties, std::function<void()> action = {},
                   std::optional<Timeout> timeout = std::nullopt);
  Barrier(std::size_t parties, Timeout timeout) : Barrier(parties, {}, timeout) {}
  // One party; what a forkserver child's argument is decoded into.
  Barrier() : Barrier(1) {}

  Barrier(const Barrier&) = default;
  Barrier& operator=(const Barrier&) = default;
  Barrier(Barrier&&) noexcept = default;
  Barrier& operator=(Barrier&&) noexcept = default;
  ~Barrier() = default;

  // Waits for the other parties, at most the default timeout if there is one.
  std::size_t wait() { return wait_until(detail::Deadline::from(timeout_)); }
  template <class Rep, class Period>
  std::size_t wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::Deadline::after(timeout));
  }
  // Back to the empty state; current waiters get BrokenBarrierError.
  void reset();
  // Breaks the barrier: current and future waiters get BrokenBarrierError.
  void abort();
  [[nodiscard]] std::size_t parties() const;
  [[nodiscard]] std::size_t n_waiting() const;
  [[nodiscard]] bool broken() const;
  // The default timeout of wait(), if any.
  [[nodiscard]] std::optional<Timeout> timeout() const { return timeout_; }

  // save()/load(): only as a forkserver process argument (detail::PassedToChild).
  // The default timeout travels; an action cannot (it is a closure): a
  // Barrier with an action throws SyncError when passed, and one loaded has none.

 private:
  friend class detail::PassedToChild<Barrier>;
  template <class Self>
  static auto travelling(Self& self) {
    return std::tie(self.timeout_);
  }
  void reset_after_arrival() { action_ = {}; }
  std::size_t wait_until(const detail::Deadline& deadline);
  [[nodiscard]] detail::PassedPlacement passed() const;
  void arrive(const detail::PassedPlacement& p);
  std::function<void()> action_;
  std::optional<Timeout> timeout_;
  detail::SyncHandle<detail::BarrierState> handle_;
};

}  // namespace mpx
