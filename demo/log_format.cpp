// The log format, the counting and the generator (see log_format.hpp).
#include "log_format.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace demo {

namespace {

constexpr std::array<std::string_view, 12> kMonths{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

struct Civil {
  std::int64_t y;
  unsigned m, d;
};
Civil civil_from_days(std::int64_t z) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2), m, d};
}

bool digit(char c) { return c >= '0' && c <= '9'; }

// n digits at s[p..], advancing p.
bool fixed_digits(std::string_view s, std::size_t& p, int n, unsigned& value) {
  if (p + static_cast<std::size_t>(n) > s.size()) return false;
  value = 0;
  for (int i = 0; i < n; ++i, ++p) {
    if (!digit(s[p])) return false;
    value = value * 10 + static_cast<unsigned>(s[p] - '0');
  }
  return true;
}

bool expect(std::string_view s, std::size_t& p, char c) {
  if (p >= s.size() || s[p] != c) return false;
  ++p;
  return true;
}

// A space-free, non-empty token ending at a space (consumed).
bool token(std::string_view s, std::size_t& p, std::string_view& out) {
  const std::size_t end = s.find(' ', p);
  if (end == std::string_view::npos || end == p) return false;
  out = s.substr(p, end - p);
  p = end + 1;
  return true;
}

// [29/Nov/2026:13:55:36 +0000] -> minutes since the epoch, UTC.
bool timestamp(std::string_view s, std::size_t& p, std::int64_t& minute) {
  unsigned day = 0, year = 0, hour = 0, min = 0, sec = 0, zone = 0;
  if (!expect(s, p, '[') || !fixed_digits(s, p, 2, day) || !expect(s, p, '/') || p + 3 > s.size()) return false;
  const auto month = std::find(kMonths.begin(), kMonths.end(), s.substr(p, 3));
  if (month == kMonths.end()) return false;
  p += 3;
  if (!expect(s, p, '/') || !fixed_digits(s, p, 4, year) || !expect(s, p, ':') || !fixed_digits(s, p, 2, hour) ||
      !expect(s, p, ':') || !fixed_digits(s, p, 2, min) || !expect(s, p, ':') || !fixed_digits(s, p, 2, sec) ||
      !expect(s, p, ' ') || p >= s.size() || (s[p] != '+' && s[p] != '-'))
    return false;
  const int sign = s[p++] == '-' ? -1 : 1;
  if (!fixed_digits(s, p, 4, zone) || !expect(s, p, ']')) return false;
  const auto m = static_cast<unsigned>(month - kMonths.begin()) + 1;
  const std::int64_t offset = static_cast<std::int64_t>(zone / 100) * 60 + zone % 100;
  minute = days_from_civil(year, m, day) * 1440 + hour * 60 + min - sign * offset;
  return true;
}

// A double-quoted string with backslash escapes, starting at the quote.
bool quoted(std::string_view s, std::size_t& p) {
  if (!expect(s, p, '"')) return false;
  while (p < s.size()) {  // memchr, not a byte loop: agents are long
    const std::size_t quote = s.find('"', p);
    if (quote == std::string_view::npos) return false;
    const std::size_t escape = s.substr(0, quote).find('\\', p);
    if (escape == std::string_view::npos) {
      p = quote + 1;
      return true;
    }
    p = escape + 2;  // the escaped character, whatever it is
  }
  return false;
}

// The optional tail: ` "referer" "agent"` and ` <seconds>` after it.
std::optional<std::uint32_t> tail_latency(std::string_view s, std::size_t p) {
  if (!expect(s, p, ' ') || !quoted(s, p) || !expect(s, p, ' ') || !quoted(s, p)) return std::nullopt;
  if (!expect(s, p, ' ') || p >= s.size() || !digit(s[p])) return std::nullopt;
  std::uint32_t seconds = 0;
  for (int n = 0; n < 6 && p < s.size() && digit(s[p]); ++n, ++p) seconds = seconds * 10 + static_cast<std::uint32_t>(s[p] - '0');
  std::uint32_t millis = 0;
  if (p + 1 < s.size() && s[p] == '.' && digit(s[p + 1])) {
    ++p;
    for (int n = 0; n < 3; ++n) millis = millis * 10 + (p < s.size() && digit(s[p]) ? static_cast<std::uint32_t>(s[p++] - '0') : 0);
  }
  return seconds * 1000 + millis;
}

}  // namespace

bool parse_line(std::string_view s, Record& out) {
  if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
  std::size_t p = 0;
  std::string_view ident, user;
  if (!token(s, p, out.client) || !token(s, p, ident) || !token(s, p, user)) return false;
  if (!timestamp(s, p, out.minute) || !expect(s, p, ' ') || !expect(s, p, '"')) return false;
  const std::size_t close = s.find('"', p);
  if (close == std::string_view::npos) return false;
  const std::string_view request = s.substr(p, close - p);
  p = close + 1;
  // "METHOD TARGET PROTOCOL": the target is the second space-separated part.
  if (const std::size_t sp = request.find(' '); sp == std::string_view::npos) {
    out.path = "-";
  } else {
    std::string_view target = request.substr(sp + 1);
    target = target.substr(0, target.find(' '));
    out.path = target.substr(0, target.find('?'));
  }
  unsigned status = 0;
  if (!expect(s, p, ' ') || !fixed_digits(s, p, 3, status) || !expect(s, p, ' ')) return false;
  out.status = static_cast<int>(status);
  out.bytes = 0;
  if (p < s.size() && s[p] == '-') {
    ++p;
  } else {
    if (p >= s.size() || !digit(s[p])) return false;
    for (int n = 0; n < 18 && p < s.size() && digit(s[p]); ++n, ++p) out.bytes = out.bytes * 10 + static_cast<std::uint64_t>(s[p] - '0');
  }
  out.latency_ms = tail_latency(s, p);
  return true;
}

namespace {

// Fast counting for one batch; folded into a Stats at the end.
struct Accumulator {
  std::array<std::uint64_t, 1000> status{};
  std::vector<std::uint64_t> latency = std::vector<std::uint64_t>(1 << 14);
  std::map<std::uint32_t, std::uint64_t> slow;  // >= 16384 ms
  std::int64_t minute = 0;
  std::uint64_t in_minute = 0;

  void flush_minute(Stats& stats) {
    if (in_minute) stats.per_minute[minute] += in_minute;
    in_minute = 0;
  }
};

void bump(CountMap& counts, std::string_view key, std::uint64_t by) {
  if (auto it = counts.find(key); it != counts.end()) {
    it->second += by;
  } else {
    counts.emplace(std::string(key), by);
  }
}

}  // namespace

void Stats::add_line(std::string_view line) {
  ++lines;
  Record r;
  if (!parse_line(line, r)) {
    ++malformed;
    return;
  }
  bytes_sent += r.bytes;
  ++status[r.status];
  bump(paths, r.path, 1);
  bump(client_bytes, r.client, r.bytes);
  if (r.latency_ms) ++latency_ms[*r.latency_ms];
  ++per_minute[r.minute];
}

void Stats::add_text(std::string_view text) {
  Accumulator acc;
  Record r;
  const char* p = text.data();
  const char* const end = p + text.size();
  while (p < end) {
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)));
    const char* line_end = nl ? nl : end;
    ++lines;
    if (parse_line(std::string_view(p, static_cast<std::size_t>(line_end - p)), r)) {
      bytes_sent += r.bytes;
      ++acc.status[static_cast<std::size_t>(r.status)];
      bump(paths, r.path, 1);
      bump(client_bytes, r.client, r.bytes);
      if (r.latency_ms) {
        if (*r.latency_ms < acc.latency.size()) {
          ++acc.latency[*r.latency_ms];
        } else {
          ++acc.slow[*r.latency_ms];
        }
      }
      if (r.minute != acc.minute) {
        acc.flush_minute(*this);
        acc.minute = r.minute;
      }
      ++acc.in_minute;
    } else {
      ++malformed;
    }
    p = line_end + 1;
  }
  acc.flush_minute(*this);
  for (std::size_t s = 0; s < acc.status.size(); ++s)
    if (acc.status[s]) status[static_cast<int>(s)] += acc.status[s];
  for (std::size_t ms = 0; ms < acc.latency.size(); ++ms)
    if (acc.latency[ms]) latency_ms[static_cast<std::uint32_t>(ms)] += acc.latency[ms];
  for (const auto& [ms, n] : acc.slow) latency_ms[ms] += n;
}

void Stats::merge(const Stats& o) {
  lines += o.lines;
  malformed += o.malformed;
  bytes_sent += o.bytes_sent;
  for (const auto& [k, v] : o.status) status[k] += v;
  for (const auto& [k, v] : o.paths) bump(paths, k, v);
  for (const auto& [k, v] : o.client_bytes) bump(client_bytes, k, v);
  for (const auto& [k, v] : o.latency_ms) latency_ms[k] += v;
  for (const auto& [k, v] : o.per_minute) per_minute[k] += v;
}

std::optional<std::uint32_t> Stats::latency_quantile(double q) const {
  std::uint64_t total = 0;
  for (const auto& [ms, n] : latency_ms) total += n;
  if (total == 0) return std::nullopt;
  const auto rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total))));
  std::uint64_t seen = 0;
  for (const auto& [ms, n] : latency_ms) {
    seen += n;
    if (seen >= rank) return ms;
  }
  return latency_ms.rbegin()->first;
}

std::vector<std::pair<std::string, std::uint64_t>> Stats::top(const CountMap& counts, std::size_t n) const {
  std::vector<std::pair<std::string, std::uint64_t>> all(counts.begin(), counts.end());
  const auto by_count = [](const auto& a, const auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; };
  const std::size_t k = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k), all.end(), by_count);
  all.resize(k);
  return all;
}

std::string Stats::differences(const Stats& o) const {
  std::string out;
  auto note = [&](bool same, const char* what) {
    if (!same) out += std::string(out.empty() ? "" : ", ") + what;
  };
  note(lines == o.lines, "lines");
  note(malformed == o.malformed, "malformed");
  note(bytes_sent == o.bytes_sent, "bytes");
  note(status == o.status, "status");
  note(paths == o.paths, "paths");
  note(client_bytes == o.client_bytes, "client bytes");
  note(latency_ms == o.latency_ms, "latency");
  note(per_minute == o.per_minute, "per minute");
  return out;
}

// ---- the generator

namespace {

struct Rng {  // splitmix64: the same stream everywhere for a seed
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
  // Skewed towards 0: a few hot items, a long tail.
  std::size_t skewed(std::size_t n, double power) {
    return std::min(n - 1, static_cast<std::size_t>(std::pow(uniform(), power) * static_cast<double>(n)));
  }
};

constexpr std::array<std::string_view, 32> kPages{
    "/", "/index.html", "/api/v1/products", "/api/v1/cart", "/static/js/app.js", "/static/css/site.css",
    "/api/v1/search", "/login", "/api/v1/orders", "/favicon.ico", "/static/img/logo.png", "/api/v1/user",
    "/checkout", "/api/v1/recommendations", "/about", "/robots.txt", "/api/v1/reviews", "/blog",
    "/api/v1/inventory", "/contact", "/api/v2/graphql", "/sitemap.xml", "/healthz", "/api/v1/payments",
    "/static/js/vendor.js", "/logout", "/api/v1/wishlist", "/help", "/careers", "/api/v1/coupons", "/press",
    "/wp-login.php"};
constexpr std::array<std::string_view, 8> kAgents{
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
    "curl/8.5.0", "Googlebot/2.1 (+http://www.google.com/bot.html)", "python-requests/2.32.3"};
constexpr std::array<std::string_view, 6> kReferers{"-", "-", "-", "https://www.google.com/", "https://shop.example.com/",
                                                    "https://news.ycombinator.com/"};

class Writer {
 public:
  explicit Writer(const std::string& path) : file_(std::fopen(path.c_str(), "wb")) {
    if (!file_) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
    buf_.reserve(kFlush + 4096);
  }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  ~Writer() {
    if (file_) std::fclose(file_);
  }
  void put(std::string_view s) { buf_.append(s); }
  void put(char c) { buf_.push_back(c); }
  void num(std::uint64_t v, int width = 0) {
    char tmp[24];
    int n = 0;
    do {
      tmp[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v);
    for (int i = n; i < width; ++i) buf_.push_back('0');
    while (n) buf_.push_back(tmp[--n]);
  }
  void end_line() {
    buf_.push_back('\n');
    if (buf_.size() >= kFlush) flush();
  }
  std::uint64_t close() {
    flush();
    const bool ok = std::fclose(std::exchange(file_, nullptr)) == 0;
    if (!ok) throw std::runtime_error(std::string("writing the log failed: ") + std::strerror(errno));
    return written_;
  }

 private:
  void flush() {
    if (std::fwrite(buf_.data(), 1, buf_.size(), file_) != buf_.size())
      throw std::runtime_error(std::string("writing the log failed: ") + std::strerror(errno));
    written_ += buf_.size();
    buf_.clear();
  }
  static constexpr std::size_t kFlush = 1 << 20;
  std::FILE* file_;
  std::string buf_;
  std::uint64_t written_ = 0;
};

}  // namespace

std::uint64_t generate_log(const std::string& path, std::uint64_t lines, std::uint64_t seed) {
  Rng rng{seed * 0x2545F4914F6CDD1DULL + 1};
  Writer out(path);
  // 3000 clients, a few of them busy.
  std::vector<std::string> clients;
  constexpr std::array<unsigned, 10> kFirst{23, 45, 66, 81, 93, 104, 151, 172, 185, 203};
  for (int i = 0; i < 3000; ++i)
    clients.push_back(std::to_string(kFirst[rng.below(kFirst.size())]) + "." + std::to_string(rng.below(256)) + "." +
                      std::to_string(rng.below(256)) + "." + std::to_string(1 + rng.below(254)));
  std::int64_t t_ms = days_from_civil(2026, 11, 29) * 86'400'000;  // one day of traffic per million lines
  for (std::uint64_t i = 0; i < lines; ++i) {
    t_ms += static_cast<std::int64_t>(rng.below(173));
    if (rng.below(10000) == 0) {  // a broken line now and then (a truncated write)
      out.put(clients[rng.below(clients.size())]);
      out.put(" - - [garbled");
      out.end_line();
      continue;
    }
    out.put(clients[rng.skewed(clients.size(), 3.0)]);
    out.put(" - - [");
    const std::int64_t secs = t_ms / 1000;
    const Civil c = civil_from_days(secs / 86400);
    const std::int64_t sod = secs % 86400;
    out.num(c.d, 2);
    out.put('/');
    out.put(kMonths[c.m - 1]);
    out.put('/');
    out.num(static_cast<std::uint64_t>(c.y), 4);
    out.put(':');
    out.num(static_cast<std::uint64_t>(sod / 3600), 2);
    out.put(':');
    out.num(static_cast<std::uint64_t>(sod / 60 % 60), 2);
    out.put(':');
    out.num(static_cast<std::uint64_t>(sod % 60), 2);
    out.put(" +0000] \"");
    const std::size_t roll = rng.below(1000);
    const bool junk = roll < 2;  // a TLS hello on the HTTP port: nginx logs it escaped, status 400
    std::string_view method = roll < 880 ? "GET" : roll < 970 ? "POST" : roll < 990 ? "HEAD" : roll < 995 ? "PUT" : "DELETE";
    std::uint64_t status = 200, bytes = 0;
    bool is_static = false;
    if (junk) {
      out.put("\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xFC\\x03\\x03");
      status = 400;
      bytes = 157;
    } else {
      out.put(method);
      out.put(' ');
      if (rng.below(4) == 0) {  // a product page: a long tail of paths
        out.put("/products/");
        out.num(1 + rng.skewed(2000, 2.0));
      } else {
        const std::string_view page = kPages[rng.skewed(kPages.size(), 2.5)];
        is_static = page.starts_with("/static") || page == "/favicon.ico";
        out.put(page);
      }
      if (rng.below(10) == 0) {
        out.put("?page=");
        out.num(1 + rng.below(20));
      }
      out.put(" HTTP/1.1");
      const std::size_t s = rng.below(1000);
      status = s < 40 ? 404 : s < 44 ? 500 : s < 47 ? 503 : s < 57 ? 301 : s < 60 ? 403
             : (is_static && s < 160) ? 304 : (method == "POST" && s < 400) ? 201 : 200;
      bytes = status == 304 || status == 301 ? 0 : status >= 400 ? 150 + rng.below(400)
            : is_static ? 2000 + rng.below(200'000) : 300 + rng.below(30'000);
    }
    out.put("\" ");
    out.num(status);
    out.put(' ');
    out.num(bytes);
    out.put(" \"");
    out.put(junk ? "-" : kReferers[rng.below(kReferers.size())]);
    out.put("\" \"");
    out.put(junk ? "-" : kAgents[rng.skewed(kAgents.size(), 1.5)]);
    out.put("\" ");
    // Latency: mostly fast, a slow tail, a few very slow requests.
    std::uint64_t ms = 1 + static_cast<std::uint64_t>(std::pow(rng.uniform(), 4.0) * 400.0) + rng.below(20);
    if (rng.below(100) == 0) ms += 500 + rng.below(5000);
    if (status >= 500) ms += 1000 + rng.below(29'000);
    out.num(ms / 1000);
    out.put('.');
    out.num(ms % 1000, 3);
    out.end_line();
  }
  return out.close();
}

}  // namespace demo
