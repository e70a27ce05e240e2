// Condition: exact notify(n), in the manner of CPython's multiprocessing
// Condition (a count of sleepers and a count of wake-ups handed out), but
// without making notify() wait for the woken to acknowledge.
//
// All bookkeeping is done under the condition's lock: wait() registers while
// it still holds the lock, notify() must hold it, and a waiter that wakes up
// re-acquires the lock before it decides anything. Only the sleep itself
// happens without the lock, on the futex word `gen`.
//
//   waiters   registered waiters that have not returned yet
//   pending   wake-ups handed out by notify() and not yet taken
//   gen       bumped by every notify() that hands out wake-ups
//
// notify(n) hands out k = min(n, waiters - pending) wake-ups, bumps gen and
// wakes k sleepers. A waiter that wakes (for any reason: futex wake-up,
// changed gen, signal, timeout) takes a wake-up only if one is pending and
// gen moved since it registered (so a waiter that arrived after the notify
// cannot take it); then it returns true. On timeout without one it
// deregisters and returns false; otherwise it sleeps again. Each wake-up is
// taken by exactly one waiter, so exactly k waiters return true.
#include "mpx/condition.hpp"

#include <algorithm>
#include <climits>

#include "mpx/detail/futex.hpp"
#include "sync_state.hpp"

namespace mpx {

namespace detail {
struct alignas(64) ConditionState {
  StateHeader header{};
  std::atomic<std::uint32_t> gen{0};      // futex word; changed only under the lock
  std::atomic<std::uint32_t> waiters{0};  // under the lock
  std::atomic<std::uint32_t> pending{0};  // under the lock
};
constexpr std::uint32_t kConditionMagic = 0x4358504d;  // "MPXC"
}  // namespace detail

using detail::ConditionState;

namespace {
detail::Placement new_condition_state() {
  return detail::construct_anonymous<ConditionState>(detail::kConditionMagic);
}
constexpr auto kRelaxed = std::memory_order_relaxed;  // the lock orders every access
}  // namespace

Condition::Condition() : lock_(RLock()), handle_(new_condition_state()) {}
Condition::Condition(Lock lock) : lock_(std::move(lock)), handle_(new_condition_state()) {}
Condition::Condition(RLock lock) : lock_(std::move(lock)), handle_(new_condition_state()) {}

void Condition::acquire() {
  std::visit([](auto& l) { l.acquire(); }, lock_);
}
void Condition::release() {
  std::visit([](auto& l) { l.release(); }, lock_);
}
bool Condition::try_lock() {
  return std::visit([](auto& l) { return l.try_acquire(); }, lock_);
}

void Condition::check_held(const char* what) const {
  bool held = std::holds_alternative<RLock>(lock_) ? std::get<RLock>(lock_).is_owned() : std::get<Lock>(lock_).locked();
  if (!held) throw SyncError(std::string("Condition: ") + what + "() without holding the lock");
}

bool Condition::wait_until(const detail::Deadline& deadline) {
  check_held("wait");
  auto& s = handle_.state("Condition");
  const std::uint32_t registered_gen = s.gen.load(kRelaxed);
  s.waiters.store(s.waiters.load(kRelaxed) + 1, kRelaxed);
  std::uint32_t expected = registered_gen;
  for (;;) {
    // Release every level of an RLock; a plain Lock once.
    unsigned depth = 0;
    if (auto* r = std::get_if<RLock>(&lock_)) {
      depth = r->release_all();
    } else {
      std::get<Lock>(lock_).release();
    }
    // A notify between the release and the sleep changed gen: the futex
    // returns at once, so no wake-up is missed.
    (void)detail::futex_wait(s.gen, expected, deadline);
    LockStatus status;
    if (auto* r = std::get_if<RLock>(&lock_)) {
      status = r->reacquire(depth);
    } else {
      status = detail::lock_acquire(std::get<Lock>(lock_).handle_.state("Lock"), detail::Deadline::never(), true);
    }
    // Lock held again: decide.
    const std::uint32_t pending = s.pending.load(kRelaxed);
    const bool notified = pending > 0 && s.gen.load(kRelaxed) != registered_gen;
    const bool give_up = status == LockStatus::owner_died || (!deadline.is_never() && deadline.expired());
    if (notified || give_up) {
      if (notified) s.pending.store(pending - 1, kRelaxed);
      s.waiters.store(s.waiters.load(kRelaxed) - 1, kRelaxed);
      // The lock's previous holder died: report it now, with the lock held,
      // rather than letting others take a lock whose state needs repair.
      if (status == LockStatus::owner_died) detail::throw_owner_dead("Condition's lock", 0);
      return notified;
    }
    expected = s.gen.load(kRelaxed);  // a spurious wake-up, or the wake-up went to another waiter
  }
}

void Condition::notify(int n) {
  check_held("notify");
  if (n <= 0) return;
  auto& s = handle_.state("Condition");
  const std::uint32_t waiters = s.waiters.load(kRelaxed);
  const std::uint32_t pending = s.pending.load(kRelaxed);
  const std::uint32_t k = std::min<std::uint32_t>(static_cast<std::uint32_t>(n), waiters - pending);
  if (k == 0) return;
  s.pending.store(pending + k, kRelaxed);
  s.gen.store(s.gen.load(kRelaxed) + 1, std::memory_order_release);
  detail::futex_wake(s.gen, static_cast<int>(k));
}

void Condition::notify_all() { notify(INT_MAX); }

detail::PassedPlacement Condition::passed() const { return detail::pass(handle_, "Condition"); }
void Condition::arrive(const detail::PassedPlacement& p) {
  handle_ = detail::SyncHandle<detail::ConditionState>(
      detail::arrive<detail::ConditionState>(p, detail::kConditionMagic, "Condition"));
}

}  // namespace mpx
