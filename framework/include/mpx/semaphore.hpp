// mpx/semaphore.hpp: Semaphore and BoundedSemaphore across processes, as
// multiprocessing.Semaphore / BoundedSemaphore.
//
//     mpx::Semaphore slots(3);                 // at most 3 at a time
//     slots.acquire(); ...; slots.release();
//
// Any thread of any process sharing the state may call anything (handles are
// cheap references; copies share one semaphore; fork or attach_at()).
// acquire() blocks while the value is 0; acquire(timeout) waits at most
// `timeout` and returns false on expiry (a zero or negative timeout is
// try_acquire(), as Python; docs/queues-and-pipes.md, "Timeouts");
// try_acquire() never blocks.
// release(n) adds n and wakes up to n waiters; it never blocks. A
// BoundedSemaphore refuses (SyncError, value unchanged) a release that would
// raise the value above its initial value. A semaphore has no owner, so a
// process that dies after acquire() is not detected (as in Python): use a
// Lock when that matters. Wait path: FUTEX_WAIT on the value word.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/sync_handle.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {

namespace detail {
struct SemaphoreState;
}

class Semaphore : public detail::PassedToChild<Semaphore> {
 public:
  static constexpr std::size_t shared_size = 64;
  static constexpr std::size_t shared_align = 64;
  static constexpr std::uint32_t max_value = 0x7fffffff;

  // Throws SyncError when value > max_value.
  explicit Semaphore(std::uint32_t value = 1);
  [[nodiscard]] static Semaphore create_at(const SharedMemory& shm, std::size_t offset, std::uint32_t value = 1);
  [[nodiscard]] static Semaphore attach_at(const SharedMemory& shm, std::size_t offset);

  Semaphore(const Semaphore&) = default;
  Semaphore& operator=(const Semaphore&) = default;
  Semaphore(Semaphore&&) noexcept = default;
  Semaphore& operator=(Semaphore&&) noexcept = default;
  ~Semaphore() = default;

  void acquire() { (void)acquire_until(detail::Deadline::never(), true); }
  template <class Rep, class Period>
  [[nodiscard]] bool acquire(std::chrono::duration<Rep, Period> timeout) {
    if (timeout <= timeout.zero()) return try_acquire();
    return acquire_until(detail::Deadline::after(timeout), true);
  }
  [[nodiscard]] bool try_acquire() { return acquire_until(detail::Deadline::never(), false); }
  // Throws SyncError past max_value (or, bounded, past the initial value).
  void release(std::uint32_t n = 1);
  [[nodiscard]] std::uint32_t get_value() const;

  // Lockable, for std::lock_guard and friends.
  void lock() { acquire(); }
  [[nodiscard]] bool try_lock() { return try_acquire(); }
  void unlock() { release(); }

  // save()/load(): only as a forkserver process argument (detail::PassedToChild).
  // A BoundedSemaphore arrives bounded (the bound is in the shared state).

 protected:
  Semaphore(std::uint32_t value, std::uint32_t bound);
  explicit Semaphore(detail::Placement p) : handle_(std::move(p)) {}

 private:
  friend class detail::PassedToChild<Semaphore>;
  bool acquire_until(const detail::Deadline& deadline, bool block);
  [[nodiscard]] detail::PassedPlacement passed() const;
  void arrive(const detail::PassedPlacement& p);
  detail::SyncHandle<detail::SemaphoreState> handle_;
};

class BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(std::uint32_t value = 1) : Semaphore(value, value) {}
  [[nodiscard]] static BoundedSemaphore create_at(const SharedMemory& shm, std::size_t offset,
                                                  std::uint32_t value = 1);
  [[nodiscard]] static BoundedSemaphore attach_at(const SharedMemory& shm, std::size_t offset);

 private:
  explicit BoundedSemaphore(detail::Placement p) : Semaphore(std::move(p)) {}
};

}  // namespace mpx
