#include "mpx/detail/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "mpx/sync_error.hpp"

namespace mpx::detail {

namespace {
long futex(const std::atomic<std::uint32_t>& word, int op, std::uint32_t val, const timespec* ts,
           std::uint32_t val3) {
  // The kernel only reads the word; the cast drops const for the syscall ABI.
  auto* addr = const_cast<std::uint32_t*>(reinterpret_cast<const std::uint32_t*>(&word));
  return ::syscall(SYS_futex, addr, op, val, ts, nullptr, val3);
}
}  // namespace

FutexWaitResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                           const Deadline& deadline) {
  auto ts = deadline.monotonic_timespec();
  if (ts && deadline.expired()) return FutexWaitResult::timed_out;
  long rc = futex(word, FUTEX_WAIT_BITSET, expected, ts ? &*ts : nullptr, FUTEX_BITSET_MATCH_ANY);
  if (rc == 0) return FutexWaitResult::woken;
  switch (errno) {
    case EAGAIN: return FutexWaitResult::value_changed;
    case ETIMEDOUT: return FutexWaitResult::timed_out;
    case EINTR: return FutexWaitResult::interrupted;
    default: throw OSError(errno, "mpx: futex wait on a shared word (" + std::to_string(expected) + " expected)");
  }
}

int futex_wake(const std::atomic<std::uint32_t>& word, int count) {
  long rc = futex(word, FUTEX_WAKE, static_cast<std::uint32_t>(count), nullptr, 0);
  if (rc < 0) throw OSError(errno, "mpx: futex wake of " + std::to_string(count) + " waiters");
  return static_cast<int>(rc);
}

}  // namespace mpx::detail
