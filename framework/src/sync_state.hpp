// Internal: the shared layouts of the synchronisation primitives and the
// helpers their sources share. Not installed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <new>
#include <string>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/sync_handle.hpp"
#include "mpx/shared_memory.hpp"
#include "mpx/sync_error.hpp"

namespace mpx::detail {

enum Magic : std::uint32_t {
  kLockMagic = 0x4c58504d,       // "MPXL"
  kRLockMagic = 0x5258504d,      // "MPXR"
  kSemaphoreMagic = 0x5358504d,  // "MPXS"
  kEventMagic = 0x4558504d,      // "MPXE"
};

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Adaptive spinning. A handoff between two processes running on different
// CPUs takes well under a microsecond, while a futex sleep plus wake-up
// costs 10-60 us on a virtual machine: spinning a little first pays. When
// the peer shares our CPU, though, spinning only delays it. So each
// primitive keeps a spin budget in its shared state: a spin that succeeds
// doubles it (up to kSpinMaxNs), one that fails halves it; at the floor
// (kSpinOffNs) waiters do not spin, except every 16th wait of a thread,
// which probes with kSpinStartNs and re-enables spinning if that succeeds.
// The budget is written only when it changes.
constexpr std::uint32_t kSpinOffNs = 256;
constexpr std::uint32_t kSpinMaxNs = 16384;
constexpr std::uint32_t kSpinStartNs = 4096;

// Spins with exponential backoff (fewer reads of a contended cache line)
// until ready() or the budget is spent.
template <class Ready>
bool spin_until(Ready ready, std::atomic<std::uint32_t>& budget_ns) {
  static thread_local unsigned waits = 0;
  const std::uint32_t stored = budget_ns.load(std::memory_order_relaxed);
  std::uint32_t budget = stored;
  if (budget < kSpinOffNs || budget > kSpinMaxNs) budget = kSpinStartNs;  // fresh or foreign state
  bool probe = false;
  if (budget == kSpinOffNs) {
    if ((++waits & 15) != 0) return ready();
    probe = true;
    budget = kSpinStartNs;
  }
  const auto start = std::chrono::steady_clock::now();
  const auto limit = std::chrono::nanoseconds(budget);
  unsigned delay = 1;
  bool ok = false;
  for (;;) {
    for (unsigned i = 0; i < delay; ++i) cpu_relax();
    if (ready()) {
      ok = true;
      break;
    }
    if (delay < 32) delay *= 2;
    if (std::chrono::steady_clock::now() - start > limit) break;
  }
  std::uint32_t next;
  if (ok)
    next = budget < kSpinMaxNs ? budget * 2 : budget;
  else
    next = probe ? kSpinOffNs : (budget / 2 > kSpinOffNs ? budget / 2 : kSpinOffNs);
  if (next != stored) budget_ns.store(next, std::memory_order_relaxed);
  return ok;
}

// Publishes a freshly constructed state: the magic is written last.
inline void publish(StateHeader& h, std::uint32_t magic) {
  std::atomic_ref<std::uint32_t>(h.magic).store(magic, std::memory_order_release);
}
inline bool published(StateHeader& h, std::uint32_t magic) {
  return std::atomic_ref<std::uint32_t>(h.magic).load(std::memory_order_acquire) == magic;
}

// Constructs State at a fresh placement (anonymous or in a SharedMemory).
template <class State, class... Args>
Placement construct(Placement p, std::uint32_t magic, Args&&... args) {
  auto* s = ::new (p.at) State(std::forward<Args>(args)...);
  publish(s->header, magic);
  return p;
}

// A new State in its own anonymous shared block (shared with children by fork).
template <class State, class... Args>
Placement construct_anonymous(std::uint32_t magic, Args&&... args) {
  return construct<State>(allocate_shared_block(sizeof(State)), magic, std::forward<Args>(args)...);
}

// A new State at `offset` of `shm`, for create_at(); attach() finds it there.
template <class State, class... Args>
Placement construct_at(const SharedMemory& shm, std::size_t offset, std::uint32_t magic, const char* what,
                       Args&&... args) {
  return construct<State>(place_in(shm, offset, sizeof(State), alignof(State), what), magic,
                          std::forward<Args>(args)...);
}

template <class State>
Placement attach(const SharedMemory& shm, std::size_t offset, std::uint32_t magic, const char* what) {
  Placement p = place_in(shm, offset, sizeof(State), alignof(State), what);
  if (!published(static_cast<State*>(p.at)->header, magic))
    throw SyncError(std::string(what) + ": no " + what + " at offset " + std::to_string(offset) +
                    " of SharedMemory '" + shm.name() + "' (create_at() it first)");
  return p;
}

// Passing a primitive to a forkserver child (fd_passing.hpp): where its
// state is, and, on arrival, a handle to it once the magic is checked.
template <class State>
PassedPlacement pass(const SyncHandle<State>& h, const char* what) {
  return send_placement(h.keep(), &h.state(what), sizeof(State), what);
}
template <class State>
Placement arrive(const PassedPlacement& passed, std::uint32_t magic, const char* what) {
  Placement p = receive_placement(passed, what);
  if (passed.offset % alignof(State) != 0 || !published(static_cast<State*>(p.at)->header, magic))
    throw SyncError(std::string(what) + ": the received memory holds no " + what);
  return p;
}

// The earlier of `deadline` and now + `slice`.
inline Deadline earlier(const Deadline& deadline, std::chrono::nanoseconds slice) {
  auto left = deadline.remaining();
  if (left && *left <= slice) return deadline;
  return Deadline::after(slice);
}

struct alignas(64) LockState {
  StateHeader header{};
  std::atomic<std::uint32_t> word{0};          // 0, or owner tid | kWaiters
  std::atomic<std::uint32_t> count{0};         // RLock: recursion depth (owner only)
  std::atomic<std::uint64_t> owner_ident{0};   // identity::current_thread_ident() of the owner
  std::atomic<std::uint32_t> spin_ns{kSpinStartNs};
};

constexpr std::uint32_t kWaiters = 0x80000000u;
constexpr std::uint32_t kTidMask = 0x3fffffffu;

}  // namespace mpx::detail
