// mpx/progress.hpp: progress of a long job, as a record and as one line on stderr.
//
// A Pool's map, imap, imap_unordered and starmap report through it when asked
// (MapOptions::progress / on_progress); any program may use ProgressLine for
// its own jobs. ProgressLine draws one line, redrawn in place ("\r") when
// stderr is a terminal, plain periodic lines otherwise (at most one per
// `plain_interval`), and the final state once on finish(). It writes only to
// stderr and only when used. Not thread-safe: one thread updates it.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

namespace mpx {

struct Progress {
  std::size_t done = 0;                 // items finished (failed ones included)
  std::optional<std::size_t> total;     // empty when the input's length is unknown (imap over a generator)
  std::size_t failed = 0;               // items that raised, were lost or timed out
  std::size_t lost = 0;                 // tasks whose worker died (each retry counts)
  std::size_t retried = 0;              // tasks started again after a loss
  std::chrono::duration<double> elapsed{};
  [[nodiscard]] double rate() const;    // items per second; 0 before any second has run
  [[nodiscard]] std::optional<std::chrono::duration<double>> eta() const;  // empty without a total or a rate
  // "1200/10000 12% | 3400.0 it/s | elapsed 0:00:01 | eta 0:00:03 | lost 1 retried 1"
  [[nodiscard]] std::string to_string() const;
};

class ProgressLine {
 public:
  explicit ProgressLine(std::string label = {},
                        std::chrono::milliseconds redraw_interval = std::chrono::milliseconds(100),
                        std::chrono::milliseconds plain_interval = std::chrono::seconds(2));
  // Draws `progress` if its interval has passed since the last line.
  void update(const Progress& progress);
  // Draws the final state (always) and ends the line.
  void finish(const Progress& progress);

 private:
  void draw(const Progress& progress, bool final);

  std::string label_;
  std::chrono::milliseconds redraw_interval_;
  std::chrono::milliseconds plain_interval_;
  bool terminal_;
  std::optional<std::chrono::steady_clock::time_point> last_draw_;
  bool finished_ = false;
};

}  // namespace mpx
