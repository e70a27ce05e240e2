#include "mpx/condition.hpp"

#include <climits>

#include "mpx/detail/futex.hpp"
#include "sync_state.hpp"

namespace mpx {

namespace detail {
struct alignas(64) ConditionState {
  StateHeader header{};
  std::atomic<std::uint32_t> seq{0};  // bumped by every notify
  std::atomic<std::uint32_t> waiters{0};
};
constexpr std::uint32_t kConditionMagic = 0x4358504d;  // "MPXC"
}  // namespace detail

using detail::ConditionState;

namespace {
detail::Placement new_condition_state() {
  return detail::construct_anonymous<ConditionState>(detail::kConditionMagic);
}
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
  // Read the sequence while holding the lock: a notify that follows our
  // release changes it, so its wake-up cannot be missed.
  const std::uint32_t seq = s.seq.load(std::memory_order_acquire);
  s.waiters.fetch_add(1, std::memory_order_seq_cst);
  unsigned depth = 0;
  if (auto* r = std::get_if<RLock>(&lock_)) {
    depth = r->release_all();
  } else {
    std::get<Lock>(lock_).release();
  }
  bool notified = false;
  for (;;) {
    auto result = detail::futex_wait(s.seq, seq, deadline);
    if (s.seq.load(std::memory_order_acquire) != seq) {
      notified = true;
      break;
    }
    if (result == detail::FutexWaitResult::timed_out || deadline.expired()) break;
  }
  s.waiters.fetch_sub(1, std::memory_order_relaxed);
  LockStatus status;
  if (auto* r = std::get_if<RLock>(&lock_)) {
    status = r->reacquire(depth);
  } else {
    status = detail::lock_acquire(std::get<Lock>(lock_).handle_.state("Lock"), detail::Deadline::never(), true);
  }
  if (status == LockStatus::owner_died) detail::throw_owner_dead("Condition's lock", 0);
  return notified;
}

void Condition::notify(int n) {
  check_held("notify");
  if (n <= 0) return;
  auto& s = handle_.state("Condition");
  s.seq.fetch_add(1, std::memory_order_seq_cst);
  if (s.waiters.load(std::memory_order_seq_cst) > 0) detail::futex_wake(s.seq, n);
}

void Condition::notify_all() { notify(INT_MAX); }

}  // namespace mpx
