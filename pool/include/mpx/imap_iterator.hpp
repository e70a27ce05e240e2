// mpx/imap_iterator.hpp: the lazy results of Pool::imap and
// Pool::imap_unordered, as multiprocessing.pool.IMapIterator.
//
//     for (int square : pool.imap(square_of, std::views::iota(0, 1'000'000'000), {.chunksize = 1000}))
//       ...
//     auto it = pool.imap_unordered(f, items);
//     while (auto value = it.next(5s)) use(*value);   // TimeoutError if none in 5 s
//
// The input is consumed lazily, in the thread that iterates: at most
// `max_in_flight` chunks are submitted or finished-but-not-yet-taken at any
// time, so an endless generator runs in bounded memory. imap yields in input
// order, imap_unordered as results arrive. An item whose task raised throws
// its error (mpx::RemoteError, WorkerLost, TaskTimeout, PoolError) from
// next() / the iterator at its position; the items after it still come.
// Every item of a chunk lost as a whole (worker died, timeout) throws.
// The input range must stay valid while iterating (an lvalue is referred to,
// an rvalue is moved in). Not thread-safe: one thread iterates. Abandoning the
// iteration leaves the submitted chunks to finish; their results are dropped.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "mpx/detail/pool_progress.hpp"
#include "mpx/detail/pool_sinks.hpp"
#include "mpx/detail/pool_task.hpp"
#include "mpx/pool_error.hpp"

namespace mpx {

namespace detail::pool {

template <class R>
class StreamState final : public TaskSink, public std::enable_shared_from_this<StreamState<R>> {
 public:
  struct Item {
    std::optional<R> value;
    std::exception_ptr error;
  };

  StreamState(bool ordered, ProgressTracker progress) : ordered_(ordered), progress_(std::move(progress)) {}

  // Consumer side, before submitting chunk `chunk` of `items` items.
  void submitted(std::size_t chunk, std::size_t items) {
    std::lock_guard lock(mutex_);
    chunk_items_[chunk] = items;
    submitted_items_ += items;
  }
  void input_done() {
    std::lock_guard lock(mutex_);
    input_done_ = true;
    if (taken_items_ == submitted_items_ && completed_items_ == submitted_items_) progress_.finish();
  }

  void succeeded(std::size_t chunk, std::span<const std::byte> result) override {
    std::vector<std::exception_ptr> errors;
    auto values = merge_chunk(decode<ChunkResult<R>>(result), errors);
    std::vector<Item> items(values.size());
    std::size_t failed = 0;
    for (std::size_t i = 0; i < values.size(); ++i) {
      items[i].value = std::move(values[i]);
      items[i].error = errors[i];
      failed += errors[i] ? 1 : 0;
    }
    deliver(chunk, std::move(items), failed);
  }
  void failed(std::size_t chunk, std::exception_ptr error) override {
    std::size_t count = 0;
    {
      std::lock_guard lock(mutex_);
      count = chunk_items_.at(chunk);
      if (is_worker_lost(error)) progress_.lost(false);
    }
    std::vector<Item> items(count);
    for (auto& item : items) item.error = error;
    deliver(chunk, std::move(items), count);
  }
  void retried() override {
    std::lock_guard lock(mutex_);
    progress_.lost(true);
  }

  // Consumer side: the next item, waiting until `deadline`; nullopt when
  // the stream has ended; `timed_out` set when the deadline passed first.
  std::optional<Item> take(std::optional<std::chrono::steady_clock::time_point> deadline, bool& timed_out) {
    std::unique_lock lock(mutex_);
    timed_out = false;
    for (;;) {
      if (auto item = pop_locked()) {
        ++taken_items_;
        return item;
      }
      if (input_done_ && taken_items_ == submitted_items_) return std::nullopt;
      if (!deadline) {
        cv_.wait(lock);
      } else if (cv_.wait_until(lock, *deadline) == std::cv_status::timeout) {
        if (auto item = pop_locked()) {
          ++taken_items_;
          return item;
        }
        timed_out = true;
        return std::nullopt;
      }
    }
  }
  // How many more items may be submitted now.
  std::size_t room(std::size_t limit_items) {
    std::lock_guard lock(mutex_);
    limit_items_ = limit_items;
    return room_locked();
  }
  [[nodiscard]] bool is_input_done() {
    std::lock_guard lock(mutex_);
    return input_done_;
  }

 private:
  std::size_t room_locked() const {
    const std::size_t outstanding = submitted_items_ - taken_items_;
    return outstanding >= limit_items_ ? 0 : limit_items_ - outstanding;
  }
  void deliver(std::size_t chunk, std::vector<Item> items, std::size_t failed) {
    {
      std::lock_guard lock(mutex_);
      completed_items_ += items.size();
      progress_.add(items.size(), failed);
      if (ordered_) {
        ready_chunks_[chunk] = std::deque<Item>(std::make_move_iterator(items.begin()), std::make_move_iterator(items.end()));
      } else {
        for (auto& item : items) ready_.push_back(std::move(item));
      }
      chunk_items_.erase(chunk);
      if (input_done_ && completed_items_ == submitted_items_) progress_.finish();
    }
    cv_.notify_all();
  }
  std::optional<Item> pop_locked() {
    if (ordered_) {
      while (ready_.empty()) {
        auto it = ready_chunks_.find(next_chunk_);
        if (it == ready_chunks_.end()) return std::nullopt;
        ready_ = std::move(it->second);
        ready_chunks_.erase(it);
        ++next_chunk_;
      }
    }
    if (ready_.empty()) return std::nullopt;
    Item item = std::move(ready_.front());
    ready_.pop_front();
    return item;
  }

  const bool ordered_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::size_t, std::size_t> chunk_items_;       // submitted, not yet completed
  std::map<std::size_t, std::deque<Item>> ready_chunks_;  // ordered: completed, waiting for their turn
  std::deque<Item> ready_;                                // the items to take next
  std::size_t next_chunk_ = 0;
  std::size_t submitted_items_ = 0;
  std::size_t completed_items_ = 0;
  std::size_t taken_items_ = 0;
  std::size_t limit_items_ = 1;
  bool input_done_ = false;
  ProgressTracker progress_;
};

}  // namespace detail::pool

template <class R>
class IMapIterator {
 public:
  using State = detail::pool::StreamState<R>;
  // Submits whole chunks of input while they fit in `room` items (always at
  // least one when nothing is outstanding); calls state.input_done() at the end.
  using Feeder = std::function<void(State& state, std::size_t room)>;

  IMapIterator(std::shared_ptr<State> state, Feeder feeder, std::size_t limit_items)
      : state_(std::move(state)), feeder_(std::move(feeder)), limit_items_(limit_items) {
    feed();
  }

  // The next result; nullopt at the end. Rethrows an item's error.
  std::optional<R> next() { return next_until(std::nullopt); }
  // As next(), but throws mpx::TimeoutError when no result came within `timeout`.
  template <class Rep, class Period>
  std::optional<R> next(std::chrono::duration<Rep, Period> timeout) {
    return next_until(std::chrono::steady_clock::now() +
                      std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout));
  }

  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    using pointer = const R*;
    using reference = const R&;
    iterator() = default;
    explicit iterator(IMapIterator* owner) : owner_(owner) { advance(); }
    reference operator*() const { return *current_; }
    pointer operator->() const { return &*current_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    void operator++(int) { advance(); }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.current_; }

   private:
    void advance() {
      current_.reset();
      current_ = owner_->next();
    }
    IMapIterator* owner_ = nullptr;
    std::optional<R> current_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  void feed() {
    if (state_->is_input_done()) return;
    if (const std::size_t room = state_->room(limit_items_); room > 0) feeder_(*state_, room);
  }
  std::optional<R> next_until(std::optional<std::chrono::steady_clock::time_point> deadline) {
    {
      feed();
      bool timed_out = false;
      auto item = state_->take(deadline, timed_out);
      if (timed_out) throw TimeoutError("mpx::IMapIterator::next: no result within the timeout");
      if (!item) return std::nullopt;
      feed();
      if (item->error) std::rethrow_exception(item->error);
      return std::move(item->value);
    }
  }

  std::shared_ptr<State> state_;
  Feeder feeder_;
  std::size_t limit_items_;
};

}  // namespace mpx
