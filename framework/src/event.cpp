#include "mpx/event.hpp"

#include "mpx/detail/futex.hpp"
#include "sync_state.hpp"

namespace mpx {

namespace detail {
struct alignas(64) EventState {
  StateHeader header{};
  std::atomic<std::uint32_t> flag{0};
  std::atomic<std::uint32_t> waiters{0};
  std::atomic<std::uint32_t> spin_ns{kSpinStartNs};
};
static_assert(sizeof(EventState) == Event::shared_size);
}  // namespace detail

using detail::EventState;

Event::Event()
    : handle_(detail::construct_anonymous<EventState>(detail::kEventMagic)) {}

Event Event::create_at(const SharedMemory& shm, std::size_t offset) {
  return Event(detail::construct_at<EventState>(shm, offset, detail::kEventMagic, "Event"));
}

Event Event::attach_at(const SharedMemory& shm, std::size_t offset) {
  return Event(detail::attach<EventState>(shm, offset, detail::kEventMagic, "Event"));
}

bool Event::is_set() const { return handle_.state("Event").flag.load(std::memory_order_acquire) != 0; }

void Event::set() {
  auto& s = handle_.state("Event");
  // Dekker with wait(): flag = 1 then read waiters, against waiters++ then read flag.
  if (s.flag.exchange(1, std::memory_order_seq_cst) == 0 && s.waiters.load(std::memory_order_seq_cst) > 0)
    detail::futex_wake_all(s.flag);
}

void Event::clear() { handle_.state("Event").flag.store(0, std::memory_order_relaxed); }

bool Event::wait_until(const detail::Deadline& deadline) {
  auto& s = handle_.state("Event");
  if (s.flag.load(std::memory_order_acquire)) return true;
  if (detail::spin_until([&] { return s.flag.load(std::memory_order_acquire) != 0; }, s.spin_ns)) return true;
  s.waiters.fetch_add(1, std::memory_order_seq_cst);
  while (s.flag.load(std::memory_order_seq_cst) == 0) {
    if (detail::futex_wait(s.flag, 0, deadline) == detail::FutexWaitResult::timed_out) break;
  }
  s.waiters.fetch_sub(1, std::memory_order_relaxed);
  return s.flag.load(std::memory_order_acquire) != 0;
}

detail::PassedPlacement Event::passed() const { return detail::pass(handle_, "Event"); }
void Event::arrive(const detail::PassedPlacement& p) {
  handle_ = detail::SyncHandle<EventState>(detail::arrive<EventState>(p, detail::kEventMagic, "Event"));
}

}  // namespace mpx
