// mpx/detail/pool_progress.hpp: the progress of one map/imap call, kept by
// the pool's thread (under the caller's lock) and shown as asked.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <utility>

#include "mpx/progress.hpp"

namespace mpx::detail::pool {

class ProgressTracker {
 public:
  ProgressTracker(bool show_line, std::function<void(const Progress&)> callback, std::optional<std::size_t> total)
      : callback_(std::move(callback)), start_(std::chrono::steady_clock::now()) {
    progress_.total = total;
    if (show_line) line_.emplace("mpx::Pool");
  }
  [[nodiscard]] bool active() const { return line_ || callback_; }
  void add(std::size_t done, std::size_t failed) {
    progress_.done += done;
    progress_.failed += failed;
    report(false);
  }
  void lost(bool will_retry) {
    ++progress_.lost;
    if (will_retry) ++progress_.retried;
  }
  void set_total(std::size_t total) { progress_.total = total; }
  void finish() { report(true); }

 private:
  void report(bool final) {
    if (!active() || finished_) return;
    const auto now = std::chrono::steady_clock::now();
    progress_.elapsed = now - start_;
    if (line_) final ? line_->finish(progress_) : line_->update(progress_);
    if (callback_ && (final || !last_callback_ || now - *last_callback_ >= std::chrono::milliseconds(100))) {
      last_callback_ = now;
      callback_(progress_);
    }
    finished_ = final;
  }

  Progress progress_;
  std::optional<ProgressLine> line_;
  std::function<void(const Progress&)> callback_;
  std::chrono::steady_clock::time_point start_;
  std::optional<std::chrono::steady_clock::time_point> last_callback_;
  bool finished_ = false;
};

}  // namespace mpx::detail::pool
