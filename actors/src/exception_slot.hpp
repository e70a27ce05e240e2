// Where a child process leaves the exception it dies of, in memory shared
// with its parent: written once by the child before it exits, read by the
// parent after it has exited, made anew before each start. Supervisor
// process children and hosts use it: a SharedMemory (fresh_exception_slot)
// inherited through fork by a closure child, passed as an argument to a
// registered main (hosts, ChildSpec::process<Function>) under any start
// method.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <string>

#include "mpx/actors/host.hpp"
#include "mpx/detail/demangle.hpp"
#include "mpx/process.hpp"
#include "mpx/shared_memory.hpp"

namespace mpx::actors::detail {

struct ExceptionSlot {
  static constexpr std::size_t type_capacity = 255;
  static constexpr std::size_t message_capacity = 3072;
  std::atomic<std::uint32_t> written{0};  // 1 once the sizes and text are in place
  std::uint32_t type_size = 0;
  std::uint32_t message_size = 0;
  char type[type_capacity];
  char message[message_capacity];

  // In the child, inside the handler; must not throw (the exception in
  // flight is what the child exits with).
  void record(const char* message_text) noexcept {
    try {
      const std::string name = mpx::detail::current_exception_type();
      type_size = static_cast<std::uint32_t>(std::min(name.size(), type_capacity));
      std::memcpy(type, name.data(), type_size);
      message_size = static_cast<std::uint32_t>(std::min(std::strlen(message_text), message_capacity));
      std::memcpy(message, message_text, message_size);
      written.store(1, std::memory_order_release);
    } catch (...) {
      // Out of memory describing it: the report has no exception, the exit code 1 stays.
    }
  }

  [[nodiscard]] std::optional<ChildException> read() const {
    if (written.load(std::memory_order_acquire) != 1) return std::nullopt;
    return ChildException{std::string(type, std::min<std::size_t>(type_size, type_capacity)),
                          std::string(message, std::min<std::size_t>(message_size, message_capacity))};
  }
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "shared between processes");

// A fresh Slot (a small struct a parent shares with one child: this
// exception slot, a standby host's command word) in `memory`, which the first
// call makes: a persistent segment unlinked at once (its mapping and
// descriptor are all a child needs, and nothing is left behind if the parent
// dies).
template <class Slot>
Slot* fresh_slot(SharedMemory& memory) {
  if (memory.closed()) {
    memory = SharedMemory::create(sizeof(Slot), SharedMemory::Lifetime::persistent);
    memory.unlink();
  }
  return ::new (memory.buf().data()) Slot();
}

// In the child: the Slot its parent made in `memory`.
template <class Slot>
Slot& slot_in(const SharedMemory& memory) {
  return *std::launder(reinterpret_cast<Slot*>(memory.buf().data()));
}

inline ExceptionSlot* fresh_exception_slot(SharedMemory& memory) { return fresh_slot<ExceptionSlot>(memory); }
inline ExceptionSlot& exception_slot_in(const SharedMemory& memory) { return slot_in<ExceptionSlot>(memory); }

// In the child: runs `body`, recording an uncaught exception in `slot`
// before it goes on to the process bootstrap (which logs it and exits 1).
// mpx::exit unwinds with SystemExit: an exit code, not a failure.
template <class F>
void run_recording(ExceptionSlot& slot, F&& body) {
  try {
    body();
  } catch (const mpx::SystemExit&) {
    throw;
  } catch (const std::exception& e) {
    slot.record(e.what());
    throw;
  } catch (...) {
    slot.record("");
    throw;
  }
}

}  // namespace mpx::actors::detail
