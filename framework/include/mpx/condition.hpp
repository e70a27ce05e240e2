// mpx/condition.hpp: Condition across processes, as multiprocessing.Condition.
//
//     mpx::Condition cond;                 // owns a new RLock (Python's default)
//     { std::unique_lock g(cond); cond.wait_for([&] { return ready(); }); }
//     { std::lock_guard g(cond); make_ready(); cond.notify_all(); }
//
// The condition uses the Lock or RLock given at construction (or a new
// RLock); acquire()/release()/lock()/unlock() act on it. wait*() and notify*()
// must be called with it held: for an RLock by the calling thread, for a Lock
// by anyone (Python's rule for Lock); otherwise SyncError. wait() releases
// the lock (every recursion level), sleeps until notified, and re-acquires it
// (without timeout, as Python does) before returning; wait(timeout) returns
// false when the timeout expired first (zero or negative: at once, after
// releasing and re-acquiring the lock, as Python).
// notify(n) makes exactly min(n, w) waiters return true from wait(), w being
// the waiters not yet woken when it is called; notify_all() all w. A waiter
// that started waiting after the latest notify() takes no wake-up, and a
// spurious wake-up of the OS is never reported as a notification (the waiter
// sleeps again). A waiter that times out while a wake-up is still pending
// for it takes it (returns true) rather than wasting it. Still loop on your
// predicate (another process may change the state before you run), or use
// wait_for(predicate[, timeout]), which returns the predicate's last value.
// Re-acquiring may throw OwnerDeadError (the lock is then held, the waiter
// no longer waits; see mpx/lock.hpp). notify*() never block. A process
// killed inside wait() stays counted as a waiter: a later notify may hand it
// a wake-up that a live waiter then takes in a spurious wake-up (at most one
// extra per dead waiter and notify). Copies share one condition. Wait path:
// FUTEX_WAIT on a generation word in shared memory; the counts of waiters
// and pending wake-ups sit next to it, changed only under the lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <tuple>
#include <variant>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/sync_handle.hpp"
#include "mpx/lock.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {

namespace detail {
struct ConditionState;
}

class Condition : public detail::PassedToChild<Condition> {
 public:
  Condition();  // with a new RLock
  explicit Condition(Lock lock);
  explicit Condition(RLock lock);

  Condition(const Condition&) = default;
  Condition& operator=(const Condition&) = default;
  Condition(Condition&&) noexcept = default;
  Condition& operator=(Condition&&) noexcept = default;
  ~Condition() = default;

  void acquire();
  template <class Rep, class Period>
  [[nodiscard]] bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return std::visit([&](auto& l) { return l.acquire(timeout); }, lock_);
  }
  void release();
  void lock() { acquire(); }
  [[nodiscard]] bool try_lock();
  void unlock() { release(); }

  // Returns true when notified (see above).
  bool wait() { return wait_until(detail::Deadline::never()); }
  template <class Rep, class Period>
  [[nodiscard]] bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::Deadline::after(timeout));
  }
  template <class Predicate>
  bool wait_for(Predicate predicate) {
    while (!predicate()) wait();
    return true;
  }
  template <class Predicate, class Rep, class Period>
  [[nodiscard]] bool wait_for(Predicate predicate, std::chrono::duration<Rep, Period> timeout) {
    auto deadline = detail::Deadline::after(timeout);
    bool result = predicate();
    while (!result) {
      if (deadline.expired()) break;
      wait_until(deadline);
      result = predicate();
    }
    return result;
  }
  void notify(int n = 1);
  void notify_all();

  // save()/load(): only as a forkserver process argument (detail::PassedToChild).
  // Its lock travels with it (the same shared lock in the child).

 private:
  friend class detail::PassedToChild<Condition>;
  template <class Self>
  static auto travelling(Self& self) {
    return std::tie(self.lock_);
  }
  bool wait_until(const detail::Deadline& deadline);
  void check_held(const char* what) const;
  [[nodiscard]] detail::PassedPlacement passed() const;
  void arrive(const detail::PassedPlacement& p);
  std::variant<RLock, Lock> lock_;
  detail::SyncHandle<detail::ConditionState> handle_;
};

}  // namespace mpx
