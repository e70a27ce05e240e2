// Shared by every bench/<name>_bench.cpp: the clock, CPU pinning, the common
// command line (--quick, --no-python, --repeat N, --json FILE), running the
// Python side (bench/python/<script>) whose "<scenario> <value> [unit]" lines
// it collects, and the one JSON record format every benchmark writes
// (scripts/bench.sh --collect gathers them into docs/benchmarks.md).
#pragma once

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace mpx::bench {

using Clock = std::chrono::steady_clock;
inline double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
inline double seconds_since(Clock::time_point t0) { return seconds(Clock::now() - t0); }

// Pins the calling process to one CPU; unpin() allows every CPU again.
inline void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  ::sched_setaffinity(0, sizeof set, &set);
}
inline void unpin() {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int i = 0; i < CPU_SETSIZE; ++i) CPU_SET(i, &set);
  ::sched_setaffinity(0, sizeof set, &set);
}

// The median (mean of the middle two for an even count) and the 99th
// percentile of `v`; 0 when it is empty.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
inline double p99(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, v.size() * 99 / 100)];
}
// The median of `runs` calls of `measure`.
template <class F>
double median_of(int runs, F measure) {
  std::vector<double> v;
  for (int i = 0; i < runs; ++i) v.push_back(measure());
  return median(std::move(v));
}

// The options most benchmarks take: [--quick] [--no-python] [--repeat N] [--json FILE].
struct Options {
  bool quick = false;
  bool python = true;
  int repeat = 3;
  std::string json_path;  // empty: no JSON output
};
inline Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") o.quick = true;
    if (a == "--no-python") o.python = false;
    if (a == "--repeat" && i + 1 < argc) o.repeat = std::max(1, std::atoi(argv[++i]));
    if (a == "--json" && i + 1 < argc) o.json_path = argv[++i];
  }
  return o;
}
// The same options as arguments for the Python side.
inline std::string python_args(const Options& o) {
  return std::string(o.quick ? "--quick " : "") + "--repeat " + std::to_string(o.repeat);
}

// Runs `python3 <script> <args>` and returns "scenario -> value" from its
// "<scenario> <value> [unit]" lines. Empty when python3 is missing or fails.
inline std::map<std::string, double> run_python(const std::string& script, const std::string& args) {
  std::map<std::string, double> values;
  std::string command = "python3 " + std::string(MPX_BENCH_PYTHON_DIR) + "/" + script + " " + args;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return values;
  char line[512];
  while (std::fgets(line, sizeof line, pipe)) {
    std::istringstream in(line);
    std::string name;
    double value = 0;
    if (in >> name >> value) values[name] = value;
  }
  if (::pclose(pipe) != 0) std::fprintf(stderr, "warning: '%s' failed\n", command.c_str());
  return values;
}

// One scenario's result: mpx's figure, each peer's figure on the same
// scenario in the same run (Python's multiprocessing, CAF, the machine's bare
// limit...), and which direction is better. A peer value <= 0 means "not
// measured" and is left out.
struct Record {
  using Figures = std::vector<std::pair<std::string, double>>;
  Record(std::string name_, std::string unit_, double mpx_, Figures peers_, bool higher_is_better_,
         std::string note_ = "", Figures extra_ = {})
      : name(std::move(name_)),
        unit(std::move(unit_)),
        mpx(mpx_),
        peers(std::move(peers_)),
        higher_is_better(higher_is_better_),
        note(std::move(note_)),
        extra(std::move(extra_)) {}
  std::string name;
  std::string unit;
  double mpx = 0;
  Figures peers;
  bool higher_is_better = true;
  std::string note;
  Figures extra;  // e.g. p99 figures, written as they are
};

// How many times better mpx is than `peer` (> 1: mpx better), whatever the direction.
inline double advantage(const Record& r, double peer) {
  if (peer <= 0 || r.mpx <= 0) return 0;
  return r.higher_is_better ? r.mpx / peer : peer / r.mpx;
}

inline std::string json_escape(const std::string& in) {
  std::string out;
  for (char c : in) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

inline std::string json_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// Prints one line per (scenario, peer): mpx's figure, the peer's, and mpx's
// advantage (> 1: mpx better).
inline void print_records(const std::vector<Record>& records) {
  std::printf("%-30s %-10s %12s %12s %9s  %s\n", "scenario", "unit", "mpx", "peer value", "mpx adv.", "peer; note");
  for (const auto& r : records) {
    if (r.peers.empty()) std::printf("%-30s %-10s %12.4g %12s %9s  %s\n", r.name.c_str(), r.unit.c_str(), r.mpx, "", "",
                                     r.note.c_str());
    for (const auto& [peer, value] : r.peers) {
      std::printf("%-30s %-10s %12.4g %12.4g %8.2fx  %s; %s\n", r.name.c_str(), r.unit.c_str(), r.mpx, value,
                  advantage(r, value), peer.c_str(), r.note.c_str());
    }
  }
  std::printf("(mpx adv.: how many times better mpx is than the peer, > 1 = mpx better, whatever the unit's direction)\n");
}

// Writes `records` to `path` as a JSON array, one object per scenario:
//   {"benchmark", "name", "unit", "better": "higher"|"lower", "mpx",
//    "peers": {peer: value}, "ratios": {peer: advantage}, "note", extra...}
// "ratios" are mpx's advantage over each peer (> 1: mpx better). Returns false
// (and says so on stderr) when the file cannot be written.
inline bool write_json(const std::string& path, const std::string& benchmark, const std::vector<Record>& records) {
  if (path.empty()) return true;
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "%s: cannot write %s\n", benchmark.c_str(), path.c_str());
    return false;
  }
  std::fprintf(f, "[\n");
  for (std::size_t i = 0; i < records.size(); ++i) {
    const Record& r = records[i];
    std::string peers, ratios, extra;
    for (const auto& [peer, value] : r.peers) {
      if (value <= 0) continue;
      peers += (peers.empty() ? "\"" : ", \"") + json_escape(peer) + "\": " + json_number(value);
      ratios += (ratios.empty() ? "\"" : ", \"") + json_escape(peer) + "\": " + json_number(advantage(r, value));
    }
    for (const auto& [key, value] : r.extra) extra += ", \"" + json_escape(key) + "\": " + json_number(value);
    std::fprintf(f,
                 "  {\"benchmark\": \"%s\", \"name\": \"%s\", \"unit\": \"%s\", \"better\": \"%s\", \"mpx\": %s, "
                 "\"peers\": {%s}, \"ratios\": {%s}, \"note\": \"%s\"%s}%s\n",
                 json_escape(benchmark).c_str(), json_escape(r.name).c_str(), json_escape(r.unit).c_str(),
                 r.higher_is_better ? "higher" : "lower", json_number(r.mpx).c_str(), peers.c_str(), ratios.c_str(),
                 json_escape(r.note).c_str(), extra.c_str(), i + 1 < records.size() ? "," : "");
  }
  std::fprintf(f, "]\n");
  return std::fclose(f) == 0;
}

}  // namespace mpx::bench
