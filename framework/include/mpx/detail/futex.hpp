// mpx/detail/futex.hpp: the futex(2) calls every cross-process primitive is
// built on. The word lives in shared memory, so these use the shared (not
// FUTEX_PRIVATE) operations; waits are absolute on CLOCK_MONOTONIC so a loop
// that re-waits after a spurious wake-up never stretches its deadline.
// Failures of the system call (a bad address: a bug) throw mpx::OSError.
#pragma once

#include <atomic>
#include <cstdint>

#include "mpx/detail/deadline.hpp"

namespace mpx::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == 4 && std::atomic<std::uint32_t>::is_always_lock_free,
              "futex words must be plain 32-bit atomics");

enum class FutexWaitResult { woken, value_changed, timed_out, interrupted };

// Sleeps while word == expected, until woken or the deadline passes.
// `woken` and `interrupted` may be spurious: callers re-check their condition.
FutexWaitResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                           const Deadline& deadline = Deadline::never());

// Wakes up to `count` waiters; returns how many were woken.
int futex_wake(const std::atomic<std::uint32_t>& word, int count);
inline int futex_wake_all(const std::atomic<std::uint32_t>& word) { return futex_wake(word, 0x7fffffff); }

}  // namespace mpx::detail
