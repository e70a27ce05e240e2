// mpx/async_result.hpp: the result of a task submitted to a Pool, as
// multiprocessing.pool.AsyncResult.
//
//     mpx::AsyncResult<int> r = pool.apply_async(square, 7);
//     r.wait(1s);          // true once ready
//     int v = r.get(2s);   // 49; rethrows the task's error; TimeoutError if not ready in 2 s
//
// get() blocks until the task finished and returns its value, or throws its
// error: mpx::RemoteError (the task threw), WorkerLost, TaskTimeout or
// PoolError (terminated). get(timeout) throws mpx::TimeoutError when the task
// is not ready in time and leaves it running. A callback given at submission
// has run (on the pool's thread) before wait() or get() returns. Copies share
// one result; every member may be called from any thread, any number of times.
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>

#include "mpx/pool_error.hpp"

namespace mpx {

namespace detail::pool {

// The shared state behind an AsyncResult: set once by the pool's thread.
template <class R>
class ResultState {
 public:
  using Stored = std::conditional_t<std::is_void_v<R>, bool, R>;

  // Runs `before_ready` (the callback) and then makes the result visible.
  void set_value(Stored value, const std::function<void()>& before_ready = {}) {
    {
      std::lock_guard lock(mutex_);
      value_.emplace(std::move(value));
    }
    finish(before_ready);
  }
  void set_error(std::exception_ptr error, const std::function<void()>& before_ready = {}) {
    {
      std::lock_guard lock(mutex_);
      error_ = std::move(error);
    }
    finish(before_ready);
  }
  // Waits until ready or `deadline`; true if ready.
  bool wait_until(std::optional<std::chrono::steady_clock::time_point> deadline) {
    std::unique_lock lock(mutex_);
    if (!deadline) {
      ready_cv_.wait(lock, [&] { return ready_; });
      return true;
    }
    return ready_cv_.wait_until(lock, *deadline, [&] { return ready_; });
  }
  [[nodiscard]] bool ready() {
    std::lock_guard lock(mutex_);
    return ready_;
  }
  // Only once ready.
  [[nodiscard]] std::exception_ptr error() {
    std::lock_guard lock(mutex_);
    return error_;
  }
  Stored& value() { return *value_; }
  // The value or the error, for a callback that runs before ready.
  const Stored& peek_value() const { return *value_; }

 private:
  void finish(const std::function<void()>& before_ready) {
    if (before_ready) before_ready();
    {
      std::lock_guard lock(mutex_);
      ready_ = true;
    }
    ready_cv_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable ready_cv_;
  bool ready_ = false;
  std::optional<Stored> value_;
  std::exception_ptr error_;
};

}  // namespace detail::pool

template <class R>
class AsyncResult {
 public:
  explicit AsyncResult(std::shared_ptr<detail::pool::ResultState<R>> state) : state_(std::move(state)) {}

  // The value (void: returns), or the task's error rethrown.
  decltype(auto) get() & {
    state_->wait_until(std::nullopt);
    return take_or_throw();
  }
  // On a temporary (`pool.map_async(...).get()`), the value is moved out
  // when no other copy of this result exists.
  auto get() && {
    state_->wait_until(std::nullopt);
    return take_out();
  }
  template <class Rep, class Period>
  decltype(auto) get(std::chrono::duration<Rep, Period> timeout) & {
    if (!wait(timeout)) throw TimeoutError("mpx::AsyncResult::get: the task is not ready after the timeout");
    return take_or_throw();
  }
  template <class Rep, class Period>
  auto get(std::chrono::duration<Rep, Period> timeout) && {
    if (!wait(timeout)) throw TimeoutError("mpx::AsyncResult::get: the task is not ready after the timeout");
    return take_out();
  }
  void wait() { state_->wait_until(std::nullopt); }
  // True once ready. A zero or negative timeout only checks.
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    const auto span = std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    return state_->wait_until(std::chrono::steady_clock::now() + (span.count() > 0 ? span : span.zero()));
  }
  [[nodiscard]] bool ready() const { return state_->ready(); }
  // True if the task returned a value. Throws PoolError before ready(), as
  // Python raises ValueError.
  [[nodiscard]] bool successful() const {
    if (!state_->ready()) throw PoolError("mpx::AsyncResult::successful: the result is not ready");
    return !state_->error();
  }

 private:
  decltype(auto) take_or_throw() {
    if (auto error = state_->error()) std::rethrow_exception(error);
    if constexpr (std::is_void_v<R>)
      return;
    else
      return static_cast<const R&>(state_->value());
  }

  // Moves the value out when no other copy shares it, else copies.
  auto take_out() {
    take_or_throw();
    if constexpr (!std::is_void_v<R>) {
      if (state_.use_count() == 1) return R(std::move(state_->value()));
      return R(state_->value());
    }
  }

  std::shared_ptr<detail::pool::ResultState<R>> state_;
};

}  // namespace mpx
