// mpx/lock.hpp: Lock and RLock across processes, robust against a holder's
// death; as multiprocessing.Lock / RLock.
//
//     mpx::Lock lock;                       // before Process::start(): shared by fork
//     { std::lock_guard g(lock); ... }      // Lockable, TimedLockable
//     if (lock.acquire(100ms)) { ...; lock.release(); }
//
// Who may call what: any thread of any process that shares the state (a
// handle inherited through fork, copied, passed as an argument to a process
// started with forkserver, or attached with attach_at() to a named
// SharedMemory). Handles are cheap references: copies share one lock.
//
// Lock: not recursive; like Python's, it may be released by any thread or
// process, not only the acquirer (release() of an unlocked Lock throws
// SyncError). RLock: recursive, owned by one thread; only the owner may
// release it (SyncError otherwise).
//
// Blocking: acquire() blocks until acquired; acquire(timeout) at most
// `timeout` (a std::chrono duration, measured on the monotonic clock) and
// returns false on expiry; try_acquire() never blocks. A zero or negative
// timeout is try_acquire() (Python; docs/queues-and-pipes.md, "Timeouts"). The wait path is a
// short spin, then FUTEX_WAIT on the lock word in shared memory.
//
// Robustness: the lock word holds the owner's thread id; a marker of that
// thread sits next to it (against tid reuse: its pidfs inode number, unique
// per task since boot, or where the kernel has no pidfs its start time in
// clock ticks; mpx/detail/identity.hpp). A blocked acquirer probes the
// owner every 10 ms (first after 10 ms of waiting; try_acquire() probes at
// once) and, when the owner has ended (exited, killed, zombie), takes the
// lock over. Then acquire() throws OwnerDeadError *with the lock held by the
// caller*: repair the state the lock guards, then release() as usual. The
// lock stays usable. Callers that prefer a status use acquire_status(), which
// returns LockStatus::owner_died instead of throwing. An owner thread that
// ends while its process lives also counts as dead. Not covered: holders in
// another pid namespace (their tids mean nothing here; never declared dead).
//
// Memory ordering: acquire has acquire semantics, release has release
// semantics, as for std::mutex.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/sync_handle.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {

// The previous holder died holding the lock. The lock is now held by the
// thread that caught this; the guarded state may be half-updated.
class OwnerDeadError : public SyncError {
 public:
  OwnerDeadError(const std::string& what, pid_t dead_owner) : SyncError(what), dead_owner_(dead_owner) {}
  [[nodiscard]] pid_t dead_owner() const noexcept { return dead_owner_; }

 private:
  pid_t dead_owner_;
};

enum class LockStatus {
  acquired,    // the caller holds the lock
  owner_died,  // the caller holds the lock; its previous holder died holding it
  timed_out,   // the caller does not hold the lock
};

namespace detail {
struct LockState;
// Shared by Lock, RLock and Condition: waits for the lock word.
LockStatus lock_acquire(LockState& s, const Deadline& deadline, bool block);
void lock_release(LockState& s);
[[noreturn]] void throw_owner_dead(const char* what, pid_t owner);

// The acquire / Lockable family of Lock and RLock, written once (CRTP).
// Derived provides status_until(deadline, block) (the one place that waits),
// release(), and kind_name (its name in OwnerDeadError's message); it
// befriends this base so both may stay private.
template <class Derived>
class LockInterface {
 public:
  // Blocks until acquired. Throws OwnerDeadError (lock held) as described above.
  void acquire() { check(self().status_until(Deadline::never(), true)); }
  // Waits at most `timeout`; false when it expired. Throws OwnerDeadError (lock held).
  template <class Rep, class Period>
  [[nodiscard]] bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return check(status_within(timeout));
  }
  [[nodiscard]] bool try_acquire() { return check(self().status_until(Deadline::never(), false)); }
  // The same, reporting a dead owner as a status instead of an exception.
  [[nodiscard]] LockStatus acquire_status() { return self().status_until(Deadline::never(), true); }
  template <class Rep, class Period>
  [[nodiscard]] LockStatus acquire_status(std::chrono::duration<Rep, Period> timeout) {
    return status_within(timeout);
  }

  // Lockable / TimedLockable, for std::lock_guard, std::unique_lock, std::scoped_lock.
  void lock() { acquire(); }
  [[nodiscard]] bool try_lock() { return try_acquire(); }
  template <class Rep, class Period>
  [[nodiscard]] bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return acquire(timeout);
  }
  void unlock() { self().release(); }

 protected:
  // Only as the base of Lock / RLock; their handles carry the state.
  LockInterface() = default;
  LockInterface(const LockInterface&) = default;
  LockInterface& operator=(const LockInterface&) = default;
  LockInterface(LockInterface&&) noexcept = default;
  LockInterface& operator=(LockInterface&&) noexcept = default;
  ~LockInterface() = default;

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
  // A zero or negative timeout does not wait: it is try_acquire().
  template <class Rep, class Period>
  LockStatus status_within(std::chrono::duration<Rep, Period> timeout) {
    if (timeout <= timeout.zero()) return self().status_until(Deadline::never(), false);
    return self().status_until(Deadline::after(timeout), true);
  }
  static bool check(LockStatus status) {
    if (status == LockStatus::owner_died) throw_owner_dead(Derived::kind_name, 0);
    return status == LockStatus::acquired;
  }
};
}  // namespace detail

class Lock : public detail::LockInterface<Lock>, public detail::PassedToChild<Lock> {
 public:
  static constexpr std::size_t shared_size = 64;  // bytes needed by create_at()
  static constexpr std::size_t shared_align = 64;

  // A new, unlocked lock in its own shared mapping (of a memfd).
  Lock();
  // A new lock at `offset` of `shm` (alignment shared_align), for processes
  // that attach to the segment by name; they call attach_at() with the same offset.
  [[nodiscard]] static Lock create_at(const SharedMemory& shm, std::size_t offset);
  [[nodiscard]] static Lock attach_at(const SharedMemory& shm, std::size_t offset);

  Lock(const Lock&) = default;
  Lock& operator=(const Lock&) = default;
  Lock(Lock&&) noexcept = default;
  Lock& operator=(Lock&&) noexcept = default;
  ~Lock() = default;

  // acquire(), acquire(timeout), try_acquire(), acquire_status() and the
  // Lockable functions come from detail::LockInterface (above).
  // Throws SyncError when the lock is not held.
  void release();
  // Whether some thread holds the lock right now (a snapshot).
  [[nodiscard]] bool locked() const;

  // True when both handles refer to the same shared lock.
  [[nodiscard]] bool same_as(const Lock& other) const noexcept { return handle_.same_state(other.handle_); }

  // save()/load(): only as a forkserver process argument (detail::PassedToChild).

 private:
  friend class Condition;
  friend class detail::LockInterface<Lock>;
  friend class detail::PassedToChild<Lock>;
  static constexpr const char* kind_name = "Lock";
  explicit Lock(detail::Placement p) : handle_(std::move(p)) {}
  LockStatus status_until(const detail::Deadline& deadline, bool block);
  [[nodiscard]] detail::PassedPlacement passed() const;
  void arrive(const detail::PassedPlacement& p);
  detail::SyncHandle<detail::LockState> handle_;
};

class RLock : public detail::LockInterface<RLock>, public detail::PassedToChild<RLock> {
 public:
  static constexpr std::size_t shared_size = 64;
  static constexpr std::size_t shared_align = 64;

  RLock();
  [[nodiscard]] static RLock create_at(const SharedMemory& shm, std::size_t offset);
  [[nodiscard]] static RLock attach_at(const SharedMemory& shm, std::size_t offset);
  // A new RLock whose state sits at `p` (used by Value/Array to share one mapping).
  [[nodiscard]] static RLock create_in(detail::Placement p);
  // An RLock whose state at `p` was constructed already (by create_in, in
  // this or another process); throws SyncError when there is none.
  [[nodiscard]] static RLock create_in_or_attach(detail::Placement p);

  RLock(const RLock&) = default;
  RLock& operator=(const RLock&) = default;
  RLock(RLock&&) noexcept = default;
  RLock& operator=(RLock&&) noexcept = default;
  ~RLock() = default;

  // acquire() and the rest from detail::LockInterface, as Lock; re-acquiring
  // by the owning thread just counts up.
  // Throws SyncError unless the calling thread owns the lock.
  void release();
  // Whether the calling thread owns it; how many times.
  [[nodiscard]] bool is_owned() const;
  [[nodiscard]] unsigned recursion_count() const;

  [[nodiscard]] bool same_as(const RLock& other) const noexcept { return handle_.same_state(other.handle_); }

  // save()/load(): only as a forkserver process argument (detail::PassedToChild).

 private:
  friend class Condition;
  friend class detail::LockInterface<RLock>;
  friend class detail::PassedToChild<RLock>;
  static constexpr const char* kind_name = "RLock";
  explicit RLock(detail::Placement p) : handle_(std::move(p)) {}
  LockStatus status_until(const detail::Deadline& deadline, bool block);
  // Condition::wait: give up every level, and take them back.
  unsigned release_all();
  LockStatus reacquire(unsigned count);
  [[nodiscard]] detail::PassedPlacement passed() const;
  void arrive(const detail::PassedPlacement& p);
  detail::SyncHandle<detail::LockState> handle_;
};

}  // namespace mpx
