// Internal: the shared layouts of the synchronisation primitives and the
// helpers their sources share. Not installed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <new>
#include <string>

#include "mpx/detail/deadline.hpp"
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

template <class State>
Placement attach(const SharedMemory& shm, std::size_t offset, std::uint32_t magic, const char* what) {
  Placement p = place_in(shm, offset, sizeof(State), alignof(State), what);
  if (!published(static_cast<State*>(p.at)->header, magic))
    throw SyncError(std::string(what) + ": no " + what + " at offset " + std::to_string(offset) +
                    " of SharedMemory '" + shm.name() + "' (create_at() it first)");
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
};

constexpr std::uint32_t kWaiters = 0x80000000u;
constexpr std::uint32_t kTidMask = 0x3fffffffu;

}  // namespace mpx::detail
