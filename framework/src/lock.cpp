#include "mpx/lock.hpp"

#include <thread>

#include "mpx/detail/futex.hpp"
#include "mpx/detail/identity.hpp"
#include "sync_state.hpp"

namespace mpx {

namespace detail {

namespace {

static_assert(sizeof(LockState) == Lock::shared_size && alignof(LockState) == Lock::shared_align);

constexpr std::chrono::milliseconds kProbeEvery{10};
thread_local pid_t t_dead_owner = 0;  // for the OwnerDeadError of this thread's last takeover

void note_owner(LockState& s) { s.owner_ident.store(current_thread_ident(), std::memory_order_relaxed); }

// Takes the lock over when its owner (as seen in `w`) has ended.
bool try_takeover(LockState& s, std::uint32_t w, std::uint32_t me) {
  auto owner = static_cast<pid_t>(w & kTidMask);
  if (owner == 0 || static_cast<std::uint32_t>(owner) == me) return false;
  if (!owner_gone(owner, s.owner_ident.load(std::memory_order_acquire))) return false;
  if (!s.word.compare_exchange_strong(w, me | (w & kWaiters), std::memory_order_acquire,
                                      std::memory_order_relaxed))
    return false;  // someone else moved first
  note_owner(s);
  t_dead_owner = owner;
  return true;
}

}  // namespace

LockStatus lock_acquire(LockState& s, const Deadline& deadline, bool block) {
  const auto me = static_cast<std::uint32_t>(current_tid());
  std::uint32_t expected = 0;
  if (s.word.compare_exchange_strong(expected, me, std::memory_order_acquire, std::memory_order_relaxed)) {
    note_owner(s);
    return LockStatus::acquired;
  }
  if (!block) return try_takeover(s, expected, me) ? LockStatus::owner_died : LockStatus::timed_out;

  // A short spin: a holder on another core usually lets go within a few
  // hundred nanoseconds, far less than a futex sleep and wake-up.
  if (spin_until([&] {
        std::uint32_t w = s.word.load(std::memory_order_relaxed);
        if (w & kTidMask) return false;
        return s.word.compare_exchange_weak(w, me | (w & kWaiters), std::memory_order_acquire,
                                            std::memory_order_relaxed);
      }, s.spin_ns)) {
    note_owner(s);
    return LockStatus::acquired;
  }

  auto now = std::chrono::steady_clock::now();
  auto probe_at = now + kProbeEvery;
  for (;;) {
    std::uint32_t w = s.word.load(std::memory_order_relaxed);
    if (w == 0) {
      // Taken with kWaiters set: we cannot know whether others still sleep.
      if (s.word.compare_exchange_weak(w, me | kWaiters, std::memory_order_acquire, std::memory_order_relaxed)) {
        note_owner(s);
        return LockStatus::acquired;
      }
      continue;
    }
    if (!(w & kWaiters)) {
      if (!s.word.compare_exchange_weak(w, w | kWaiters, std::memory_order_relaxed)) continue;
      w |= kWaiters;
    }
    futex_wait(s.word, w, earlier(deadline, std::max(probe_at - now, std::chrono::steady_clock::duration::zero())));
    now = std::chrono::steady_clock::now();
    if (now >= probe_at) {
      probe_at = now + kProbeEvery;
      if (try_takeover(s, s.word.load(std::memory_order_relaxed), me)) return LockStatus::owner_died;
    }
    if (!deadline.is_never() && deadline.expired()) {
      expected = 0;
      if (s.word.compare_exchange_strong(expected, me | kWaiters, std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
        note_owner(s);
        return LockStatus::acquired;
      }
      return LockStatus::timed_out;
    }
  }
}

void lock_release(LockState& s) {
  std::uint32_t prev = s.word.exchange(0, std::memory_order_release);
  if (prev & kWaiters) futex_wake(s.word, 1);
}

void throw_owner_dead(const char* what, pid_t owner) {
  if (owner == 0) owner = t_dead_owner;
  throw OwnerDeadError(std::string(what) + ": the previous holder (tid " + std::to_string(owner) +
                           ") died holding it; you hold it now: repair the guarded state, then release()",
                       owner);
}

}  // namespace detail

using detail::LockState;

// ------------------------------------------------------------------ Lock

Lock::Lock() : handle_(detail::construct_anonymous<LockState>(detail::kLockMagic)) {}

Lock Lock::create_at(const SharedMemory& shm, std::size_t offset) {
  return Lock(detail::construct_at<LockState>(shm, offset, detail::kLockMagic, "Lock"));
}

Lock Lock::attach_at(const SharedMemory& shm, std::size_t offset) {
  return Lock(detail::attach<LockState>(shm, offset, detail::kLockMagic, "Lock"));
}

LockStatus Lock::status_until(const detail::Deadline& deadline, bool block) {
  return detail::lock_acquire(handle_.state("Lock"), deadline, block);
}

void Lock::release() {
  auto& s = handle_.state("Lock");
  if ((s.word.load(std::memory_order_relaxed) & detail::kTidMask) == 0)
    throw SyncError("Lock: release() of an unlocked lock");
  detail::lock_release(s);
}

bool Lock::locked() const {
  return (handle_.state("Lock").word.load(std::memory_order_relaxed) & detail::kTidMask) != 0;
}

// ----------------------------------------------------------------- RLock

RLock::RLock() : handle_(detail::construct_anonymous<LockState>(detail::kRLockMagic)) {}

RLock RLock::create_at(const SharedMemory& shm, std::size_t offset) {
  return RLock(detail::construct_at<LockState>(shm, offset, detail::kRLockMagic, "RLock"));
}

RLock RLock::attach_at(const SharedMemory& shm, std::size_t offset) {
  return RLock(detail::attach<LockState>(shm, offset, detail::kRLockMagic, "RLock"));
}

RLock RLock::create_in(detail::Placement p) {
  return RLock(detail::construct<LockState>(std::move(p), detail::kRLockMagic));
}

RLock RLock::create_in_or_attach(detail::Placement p) {
  if (!p.at || !detail::published(static_cast<LockState*>(p.at)->header, detail::kRLockMagic))
    throw SyncError("RLock: no lock at this place");
  return RLock(std::move(p));
}

LockStatus RLock::status_until(const detail::Deadline& deadline, bool block) {
  auto& s = handle_.state("RLock");
  const auto me = static_cast<std::uint32_t>(detail::current_tid());
  if ((s.word.load(std::memory_order_relaxed) & detail::kTidMask) == me) {
    s.count.fetch_add(1, std::memory_order_relaxed);
    return LockStatus::acquired;
  }
  LockStatus status = detail::lock_acquire(s, deadline, block);
  if (status != LockStatus::timed_out) s.count.store(1, std::memory_order_relaxed);
  return status;
}

void RLock::release() {
  auto& s = handle_.state("RLock");
  const auto me = static_cast<std::uint32_t>(detail::current_tid());
  if ((s.word.load(std::memory_order_relaxed) & detail::kTidMask) != me)
    throw SyncError("RLock: release() by a thread that does not own it");
  // Only the owner touches count: no read-modify-write needed.
  unsigned count = s.count.load(std::memory_order_relaxed);
  s.count.store(count - 1, std::memory_order_relaxed);
  if (count > 1) return;
  detail::lock_release(s);
}

bool RLock::is_owned() const {
  auto& s = handle_.state("RLock");
  return (s.word.load(std::memory_order_relaxed) & detail::kTidMask) ==
         static_cast<std::uint32_t>(detail::current_tid());
}

unsigned RLock::recursion_count() const {
  return is_owned() ? handle_.state("RLock").count.load(std::memory_order_relaxed) : 0;
}

unsigned RLock::release_all() {
  auto& s = handle_.state("RLock");
  if (!is_owned()) throw SyncError("RLock: not owned by the calling thread");
  unsigned count = s.count.exchange(0, std::memory_order_relaxed);
  detail::lock_release(s);
  return count;
}

LockStatus RLock::reacquire(unsigned count) {
  auto& s = handle_.state("RLock");
  LockStatus status = detail::lock_acquire(s, detail::Deadline::never(), true);
  s.count.store(count, std::memory_order_relaxed);
  return status;
}

detail::PassedPlacement Lock::passed() const { return detail::pass(handle_, "Lock"); }
void Lock::arrive(const detail::PassedPlacement& p) {
  handle_ = detail::SyncHandle<LockState>(detail::arrive<LockState>(p, detail::kLockMagic, "Lock"));
}
detail::PassedPlacement RLock::passed() const { return detail::pass(handle_, "RLock"); }
void RLock::arrive(const detail::PassedPlacement& p) {
  handle_ = detail::SyncHandle<LockState>(detail::arrive<LockState>(p, detail::kRLockMagic, "RLock"));
}

}  // namespace mpx
