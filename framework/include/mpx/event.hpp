// mpx/event.hpp: Event across processes, as multiprocessing.Event.
//
//     mpx::Event e;                       // before Process::start(): shared by fork
//     e.wait();  bool set = e.wait(2s);   // in waiters
//     e.set();                            // wakes every waiter
//
// Any thread of any process sharing the state may call anything (handles are
// cheap references; copies share one event; fork, or create_at()/attach_at()
// in a named SharedMemory for unrelated processes). wait() blocks until the
// flag is set; wait(timeout) at most `timeout` (zero or negative: returns
// the flag at once, as Python; docs/queues-and-pipes.md, "Timeouts"); both
// return the flag as it was when they returned (so false means "timed out
// and still clear").
// set() and clear() never block. set() has release semantics and a wait()
// that returns true has acquire semantics: what the setter wrote before
// set() is visible to the waiter. Wait path: a short spin, then FUTEX_WAIT on
// the flag word; set() makes a system call only when someone sleeps.
#pragma once

#include <chrono>
#include <cstddef>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/sync_handle.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {

namespace detail {
struct EventState;
}

class Event : public detail::PassedToChild<Event> {
 public:
  static constexpr std::size_t shared_size = 64;
  static constexpr std::size_t shared_align = 64;

  Event();  // clear
  [[nodiscard]] static Event create_at(const SharedMemory& shm, std::size_t offset);
  [[nodiscard]] static Event attach_at(const SharedMemory& shm, std::size_t offset);

  Event(const Event&) = default;
  Event& operator=(const Event&) = default;
  Event(Event&&) noexcept = default;
  Event& operator=(Event&&) noexcept = default;
  ~Event() = default;

  [[nodiscard]] bool is_set() const;
  void set();
  void clear();
  // Returns true (blocks until set).
  bool wait() { return wait_until(detail::Deadline::never()); }
  template <class Rep, class Period>
  [[nodiscard]] bool wait(std::chrono::duration<Rep, Period> timeout) {
    if (timeout <= timeout.zero()) return is_set();
    return wait_until(detail::Deadline::after(timeout));
  }

  // save()/load(): only as a forkserver process argument (detail::PassedToChild).

 private:
  friend class detail::PassedToChild<Event>;
  explicit Event(detail::Placement p) : handle_(std::move(p)) {}
  bool wait_until(const detail::Deadline& deadline);
  [[nodiscard]] detail::PassedPlacement passed() const;
  void arrive(const detail::PassedPlacement& p);
  detail::SyncHandle<detail::EventState> handle_;
};

}  // namespace mpx
