// mpx/detail/deadline.hpp: a point on the monotonic clock that a blocking
// call must not wait past. Every timed wait in mpx is expressed as a
// Deadline, so "wait forever" and "wait at most t" share one code path.
#pragma once

#include <chrono>
#include <ctime>
#include <optional>

namespace mpx::detail {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC on Linux

  static Deadline never() { return Deadline{}; }
  template <class Rep, class Period>
  static Deadline after(std::chrono::duration<Rep, Period> timeout) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout);
    if (ns.count() < 0) ns = std::chrono::nanoseconds::zero();
    return Deadline{Clock::now() + ns};
  }
  // A deadline that has passed: a timed call given it tries once. Reads no
  // clock (a hot loop's "anything more?" costs no clock read when there is).
  static Deadline passed() { return Deadline{Clock::time_point::min()}; }
  static Deadline from(std::optional<std::chrono::nanoseconds> timeout) {
    return timeout ? after(*timeout) : never();
  }

  [[nodiscard]] bool is_never() const { return !at_; }
  [[nodiscard]] bool expired() const { return at_ && (is_passed() || Clock::now() >= *at_); }
  // Time left, zero when expired; nullopt for never.
  [[nodiscard]] std::optional<std::chrono::nanoseconds> remaining() const {
    if (!at_) return std::nullopt;
    if (is_passed()) return std::chrono::nanoseconds::zero();  // min() - now() would overflow
    auto left = *at_ - Clock::now();
    return left.count() > 0 ? std::chrono::duration_cast<std::chrono::nanoseconds>(left)
                            : std::chrono::nanoseconds::zero();
  }
  // Milliseconds left for poll(2): -1 for never, rounded up so that a
  // sub-millisecond remainder does not become a busy loop.
  [[nodiscard]] int poll_timeout_ms() const {
    auto left = remaining();
    if (!left) return -1;
    auto ms = (left->count() + 999'999) / 1'000'000;
    return ms > 0x7fffffff ? 0x7fffffff : static_cast<int>(ms);
  }
  // Absolute CLOCK_MONOTONIC time for FUTEX_WAIT_BITSET; nullopt for never.
  [[nodiscard]] std::optional<timespec> monotonic_timespec() const {
    if (!at_) return std::nullopt;
    if (is_passed()) return timespec{};  // the clock's epoch: long past
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(at_->time_since_epoch()).count();
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    return ts;
  }

 private:
  Deadline() = default;
  explicit Deadline(Clock::time_point at) : at_(at) {}
  [[nodiscard]] bool is_passed() const { return *at_ == Clock::time_point::min(); }
  std::optional<Clock::time_point> at_;
};

}  // namespace mpx::detail
