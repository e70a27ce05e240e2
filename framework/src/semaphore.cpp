#include "mpx/semaphore.hpp"

#include <string>

#include "mpx/detail/futex.hpp"
#include "sync_state.hpp"

namespace mpx {

namespace detail {
struct alignas(64) SemaphoreState {
  explicit SemaphoreState(std::uint32_t v, std::uint32_t b) : value(v), bound(b) {}
  StateHeader header{};
  std::atomic<std::uint32_t> value;
  std::atomic<std::uint32_t> waiters{0};
  std::uint32_t bound;  // release() may not go above it
  std::atomic<std::uint32_t> spin_ns{kSpinStartNs};
};
static_assert(sizeof(SemaphoreState) == Semaphore::shared_size);

namespace {
void check_value(std::uint32_t value) {
  if (value > Semaphore::max_value)
    throw SyncError("Semaphore: initial value " + std::to_string(value) + " is above the maximum " +
                    std::to_string(Semaphore::max_value));
}
}  // namespace
}  // namespace detail

using detail::SemaphoreState;

Semaphore::Semaphore(std::uint32_t value) : Semaphore(value, max_value) {}

Semaphore::Semaphore(std::uint32_t value, std::uint32_t bound) {
  detail::check_value(value);
  handle_ = detail::SyncHandle<SemaphoreState>(
      detail::construct_anonymous<SemaphoreState>(detail::kSemaphoreMagic, value, bound));
}

Semaphore Semaphore::create_at(const SharedMemory& shm, std::size_t offset, std::uint32_t value) {
  detail::check_value(value);
  return Semaphore(detail::construct_at<SemaphoreState>(shm, offset, detail::kSemaphoreMagic, "Semaphore", value,
                                                        max_value));
}

Semaphore Semaphore::attach_at(const SharedMemory& shm, std::size_t offset) {
  return Semaphore(detail::attach<SemaphoreState>(shm, offset, detail::kSemaphoreMagic, "Semaphore"));
}

BoundedSemaphore BoundedSemaphore::create_at(const SharedMemory& shm, std::size_t offset, std::uint32_t value) {
  detail::check_value(value);  // the bound is the initial value
  return BoundedSemaphore(
      detail::construct_at<SemaphoreState>(shm, offset, detail::kSemaphoreMagic, "BoundedSemaphore", value, value));
}

BoundedSemaphore BoundedSemaphore::attach_at(const SharedMemory& shm, std::size_t offset) {
  return BoundedSemaphore(detail::attach<SemaphoreState>(shm, offset, detail::kSemaphoreMagic, "BoundedSemaphore"));
}

bool Semaphore::acquire_until(const detail::Deadline& deadline, bool block) {
  auto& s = handle_.state("Semaphore");
  auto try_take = [&] {
    std::uint32_t v = s.value.load(std::memory_order_relaxed);
    while (v > 0)
      if (s.value.compare_exchange_weak(v, v - 1, std::memory_order_acquire, std::memory_order_relaxed)) return true;
    return false;
  };
  if (try_take()) return true;
  if (!block) return false;
  if (detail::spin_until([&] { return s.value.load(std::memory_order_relaxed) > 0 && try_take(); }, s.spin_ns)) return true;
  for (;;) {
    if (try_take()) return true;
    // Dekker with release(): waiters++ then read value, against value++ then read waiters.
    s.waiters.fetch_add(1, std::memory_order_seq_cst);
    if (s.value.load(std::memory_order_seq_cst) == 0) detail::futex_wait(s.value, 0, deadline);
    s.waiters.fetch_sub(1, std::memory_order_relaxed);
    if (deadline.expired()) return try_take();
  }
}

void Semaphore::release(std::uint32_t n) {
  auto& s = handle_.state("Semaphore");
  if (n == 0) return;
  std::uint32_t v = s.value.load(std::memory_order_relaxed);
  do {
    if (n > s.bound || v > s.bound - n)
      throw SyncError(s.bound == max_value ? "Semaphore: release() above the maximum value"
                                           : "BoundedSemaphore: released too many times (value would exceed " +
                                                 std::to_string(s.bound) + ")");
  } while (!s.value.compare_exchange_weak(v, v + n, std::memory_order_seq_cst, std::memory_order_relaxed));
  if (s.waiters.load(std::memory_order_seq_cst) > 0) detail::futex_wake(s.value, static_cast<int>(n));
}

std::uint32_t Semaphore::get_value() const { return handle_.state("Semaphore").value.load(std::memory_order_relaxed); }

detail::PassedPlacement Semaphore::passed() const { return detail::pass(handle_, "Semaphore"); }
void Semaphore::arrive(const detail::PassedPlacement& p) {
  handle_ = detail::SyncHandle<SemaphoreState>(
      detail::arrive<SemaphoreState>(p, detail::kSemaphoreMagic, "Semaphore"));
}

}  // namespace mpx
