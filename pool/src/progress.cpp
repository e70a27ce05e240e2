// pool/src/progress.cpp: the progress record and its one-line rendering.
#include "mpx/progress.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace mpx {

namespace {

std::string clock_text(double seconds) {
  const auto total = static_cast<long long>(std::max(0.0, seconds));
  char text[32];
  std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", total / 3600, total / 60 % 60, total % 60);
  return text;
}

// One write(2) per line, as the library's logger does (no stdio buffer).
void write_stderr(const std::string& text) {
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(STDERR_FILENO, text.data() + written, text.size() - written);
    if (n <= 0) return;
    written += static_cast<std::size_t>(n);
  }
}

}  // namespace

double Progress::rate() const {
  const double seconds = elapsed.count();
  return seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
}

std::optional<std::chrono::duration<double>> Progress::eta() const {
  const double r = rate();
  if (!total || r <= 0) return std::nullopt;
  const double left = *total > done ? static_cast<double>(*total - done) : 0.0;
  return std::chrono::duration<double>(left / r);
}

std::string Progress::to_string() const {
  char head[96];
  if (total) {
    const double percent = *total ? 100.0 * static_cast<double>(done) / static_cast<double>(*total) : 100.0;
    std::snprintf(head, sizeof head, "%zu/%zu %3.0f%%", done, *total, percent);
  } else {
    std::snprintf(head, sizeof head, "%zu", done);
  }
  char speed[48];
  std::snprintf(speed, sizeof speed, "%.1f it/s", rate());
  std::string line = std::string(head) + " | " + speed + " | elapsed " + clock_text(elapsed.count());
  if (const auto left = eta()) line += " | eta " + clock_text(left->count());
  if (failed) line += " | failed " + std::to_string(failed);
  if (lost || retried) line += " | lost " + std::to_string(lost) + " retried " + std::to_string(retried);
  return line;
}

ProgressLine::ProgressLine(std::string label, std::chrono::milliseconds redraw_interval,
                           std::chrono::milliseconds plain_interval)
    : label_(std::move(label)),
      redraw_interval_(redraw_interval),
      plain_interval_(plain_interval),
      terminal_(::isatty(STDERR_FILENO) == 1) {}

void ProgressLine::update(const Progress& progress) {
  if (finished_) return;
  const auto now = std::chrono::steady_clock::now();
  const auto interval = terminal_ ? redraw_interval_ : plain_interval_;
  if (last_draw_ && now - *last_draw_ < interval) return;
  last_draw_ = now;
  draw(progress, false);
}

void ProgressLine::finish(const Progress& progress) {
  if (finished_) return;
  finished_ = true;
  draw(progress, true);
}

void ProgressLine::draw(const Progress& progress, bool final) {
  const std::string text = (label_.empty() ? "" : label_ + ": ") + progress.to_string();
  if (terminal_)
    write_stderr("\r\033[K" + text + (final ? "\n" : ""));
  else
    write_stderr(text + "\n");
}

}  // namespace mpx
