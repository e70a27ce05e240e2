// demo/log_format.hpp: the access log of the log-analytics demo, what is
// counted in it, and a deterministic generator of it.
//
// A line is Apache/nginx "combined" with nginx's $request_time at the end:
//   203.0.113.7 - - [29/Nov/2026:13:55:36 +0000] "GET /api/cart?x=1 HTTP/1.1" 200 5120 "-" "Mozilla/5.0 ..." 0.042
// parse_line accepts the common format too (referer, agent and time are
// optional); a line that fails is counted as malformed, nothing else.
// demo/python/pool_reference.py implements the same rules with a regex;
// keep both in step.
//
// Stats is what one worker computes from its batches and what the
// aggregator merges: every field is a count keyed by something, so merging
// is exact and order-free (a latency histogram per millisecond, not a
// sketch), and a merged result can be compared with the sequential
// reference field by field.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace demo {

struct Record {
  std::string_view client;  // the first field (an IP address)
  std::string_view path;    // the request target without its query string
  int status = 0;
  std::uint64_t bytes = 0;  // "-" counts as 0
  std::int64_t minute = 0;  // minutes since 1970-01-01 UTC
  std::optional<std::uint32_t> latency_ms;  // $request_time, when present
};

// Parses one line (without its '\n'; a trailing '\r' is ignored).
[[nodiscard]] bool parse_line(std::string_view line, Record& out);

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using CountMap = std::unordered_map<std::string, std::uint64_t, StringHash, std::equal_to<>>;

struct Stats {
  std::uint64_t lines = 0;      // every line, malformed ones included
  std::uint64_t malformed = 0;
  std::uint64_t bytes_sent = 0;  // sum of the bytes field
  std::map<int, std::uint64_t> status;
  CountMap paths;                                // requests per path
  CountMap client_bytes;                         // bytes sent per client
  std::map<std::uint32_t, std::uint64_t> latency_ms;  // requests per latency in ms
  std::map<std::int64_t, std::uint64_t> per_minute;   // requests per minute

  // Counts one line (without its '\n'): the sequential reference's way.
  void add_line(std::string_view line);
  // The batch workers' way, faster: counts every line of `text` (lines end with '\n'; a last line without
  // one counts too).
  void add_text(std::string_view text);
  void merge(const Stats& other);
  [[nodiscard]] std::uint64_t requests() const { return lines - malformed; }
  // The latency at quantile q (0..1) by the nearest-rank rule; nullopt without samples.
  [[nodiscard]] std::optional<std::uint32_t> latency_quantile(double q) const;
  [[nodiscard]] std::vector<std::pair<std::string, std::uint64_t>> top(const CountMap& counts, std::size_t n) const;
  // Which fields differ from `other` ("" when none), for the check line.
  [[nodiscard]] std::string differences(const Stats& other) const;
  friend bool operator==(const Stats&, const Stats&) = default;

  template <class A>
  void serialize(A& ar) {
    ar(lines, malformed, bytes_sent, status, paths, client_bytes, latency_ms, per_minute);
  }
};

// Writes `lines` lines of a day of traffic, the same for the same seed.
// Returns the bytes written; throws std::runtime_error on an I/O error.
std::uint64_t generate_log(const std::string& path, std::uint64_t lines, std::uint64_t seed);

}  // namespace demo
