// mpx/detail/pool_sinks.hpp: what the pool's thread does with the outcome of
// an apply_async task and of a map_async chunk.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/async_result.hpp"
#include "mpx/detail/pool_progress.hpp"
#include "mpx/detail/pool_task.hpp"
#include "mpx/pool_error.hpp"

namespace mpx {

// Run on the pool's thread, one at a time, before the result is ready: the
// value (callback) or the error (error_callback), as Python's apply_async.
template <class R>
struct Callbacks {
  std::conditional_t<std::is_void_v<R>, std::function<void()>, std::function<void(const R&)>> callback;
  std::function<void(const Error&)> error_callback;
};

namespace detail::pool {

// Logs an exception a user callback threw (the pool's thread goes on).
void log_callback_error(const char* which) noexcept;

// True if `error` is a WorkerLost (progress counts those as losses).
inline bool is_worker_lost(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const WorkerLost&) {
    return true;
  } catch (...) {
    return false;
  }
}

template <class R>
void run_error_callback(const Callbacks<R>& callbacks, const std::exception_ptr& error) {
  if (!callbacks.error_callback) return;
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    try {
      callbacks.error_callback(e);
    } catch (...) {
      log_callback_error("error_callback");
    }
  } catch (...) {
  }
}

template <class R>
class ApplySink final : public TaskSink {
 public:
  ApplySink(std::shared_ptr<ResultState<R>> state, Callbacks<R> callbacks)
      : state_(std::move(state)), callbacks_(std::move(callbacks)) {}

  void succeeded(std::size_t, std::span<const std::byte> result) override {
    if constexpr (std::is_void_v<R>) {
      (void)decode<Unit>(result);
      state_->set_value(true, [&] { run_callback([&] { callbacks_.callback(); }); });
    } else {
      state_->set_value(decode<R>(result), [&] { run_callback([&] { callbacks_.callback(state_->peek_value()); }); });
    }
  }
  void failed(std::size_t, std::exception_ptr error) override {
    state_->set_error(error, [&] { run_error_callback(callbacks_, error); });
  }

 private:
  template <class Call>
  void run_callback(Call call) {
    if (!callbacks_.callback) return;
    try {
      call();
    } catch (...) {
      log_callback_error("callback");
    }
  }

  std::shared_ptr<ResultState<R>> state_;
  Callbacks<R> callbacks_;
};

// The items of a chunk in order: each value, or the error raised at its position.
template <class R>
std::vector<std::optional<R>> merge_chunk(ChunkResult<R>&& outcome, std::vector<std::exception_ptr>& errors) {
  const std::size_t count = outcome.values.size() + outcome.errors.size();
  std::vector<std::optional<R>> items(count);
  errors.assign(count, nullptr);
  std::size_t next_value = 0;
  std::size_t next_error = 0;
  for (std::size_t i = 0; i < count; ++i) {
    if (next_error < outcome.errors.size() && outcome.errors[next_error].index == i) {
      auto& info = outcome.errors[next_error++].error;
      errors[i] = std::make_exception_ptr(RemoteError(std::move(info.type), std::move(info.message)));
    } else if (next_value < outcome.values.size()) {
      items[i].emplace(std::move(outcome.values[next_value++]));
    } else {
      throw DecodeError(DecodeError::Kind::malformed_payload, "mpx::Pool: a chunk result does not add up to its items");
    }
  }
  return items;
}

// map_async: the chunks of one call fill one vector; the result is ready when
// every chunk is in. An item's error fails the whole map, but only then, at
// the first failing position, as Python's map.
template <class R>
class MapSink final : public TaskSink {
 public:
  MapSink(std::shared_ptr<ResultState<std::vector<R>>> state, Callbacks<std::vector<R>> callbacks,
          std::vector<std::size_t> chunk_offsets, std::size_t total, ProgressTracker progress)
      : state_(std::move(state)), callbacks_(std::move(callbacks)), offsets_(std::move(chunk_offsets)),
        total_(total), remaining_chunks_(offsets_.size()), progress_(std::move(progress)) {
    if (remaining_chunks_ == 0) complete();
  }

  void succeeded(std::size_t chunk, std::span<const std::byte> result) override {
    auto outcome = decode<ChunkResult<R>>(result);
    const std::size_t count = outcome.values.size() + outcome.errors.size();
    if (count != chunk_size(chunk))
      throw DecodeError(DecodeError::Kind::malformed_payload, "mpx::Pool: a chunk result has the wrong length");
    const std::size_t at = offsets_[chunk];
    // Allocated here, on the pool's thread, while the caller may still be
    // encoding chunks: the caller's map_async returns sooner.
    if (items_.size() != total_) items_.resize(total_);
    if (outcome.errors.empty()) {  // the common case: each value moved straight to its place
      for (std::size_t i = 0; i < count; ++i) store(at + i, std::move(outcome.values[i]));
      progress_.add(count, 0);
      chunk_done();
      return;
    }
    std::vector<std::exception_ptr> errors;
    auto items = merge_chunk(std::move(outcome), errors);
    std::size_t failed = 0;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (errors[i]) {
        note_error(at + i, errors[i]);
        ++failed;
      } else {
        store(at + i, std::move(*items[i]));
      }
    }
    progress_.add(items.size(), failed);
    chunk_done();
  }
  void failed(std::size_t chunk, std::exception_ptr error) override {
    if (is_worker_lost(error)) progress_.lost(false);
    note_error(offsets_[chunk], error);
    progress_.add(chunk_size(chunk), chunk_size(chunk));
    chunk_done();
  }
  void retried() override { progress_.lost(true); }

 private:
  // A default-constructible R is stored in place in the result vector (no
  // final pass); any other R waits in an optional until every chunk is in.
  static constexpr bool kDirect = std::is_default_constructible_v<R> && std::is_move_assignable_v<R>;
  void store(std::size_t position, R&& value) {
    if constexpr (kDirect)
      items_[position] = std::move(value);
    else
      items_[position].emplace(std::move(value));
  }
  [[nodiscard]] std::size_t chunk_size(std::size_t chunk) const {
    return (chunk + 1 < offsets_.size() ? offsets_[chunk + 1] : total_) - offsets_[chunk];
  }
  void note_error(std::size_t position, std::exception_ptr error) {
    if (!first_error_ || position < first_error_position_) {
      first_error_ = std::move(error);
      first_error_position_ = position;
    }
  }
  void chunk_done() {
    if (--remaining_chunks_ == 0) complete();
  }
  void complete() {
    progress_.finish();
    if (first_error_) {
      state_->set_error(first_error_, [&] { run_error_callback(callbacks_, first_error_); });
      return;
    }
    std::vector<R> values;
    if constexpr (kDirect) {
      values = std::move(items_);
    } else {
      values.reserve(items_.size());
      for (auto& item : items_) values.push_back(std::move(*item));
    }
    items_.clear();
    state_->set_value(std::move(values), [&] {
      if (!callbacks_.callback) return;
      try {
        callbacks_.callback(state_->peek_value());
      } catch (...) {
        log_callback_error("callback");
      }
    });
  }

  std::shared_ptr<ResultState<std::vector<R>>> state_;
  Callbacks<std::vector<R>> callbacks_;
  std::vector<std::size_t> offsets_;
  std::size_t total_;
  std::vector<std::conditional_t<kDirect, R, std::optional<R>>> items_;  // total_ of them once a chunk is in
  std::size_t remaining_chunks_;
  ProgressTracker progress_;
  std::exception_ptr first_error_;
  std::size_t first_error_position_ = 0;
};

}  // namespace detail::pool
}  // namespace mpx
