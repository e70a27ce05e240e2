// Shared by bench/sync_bench.cpp and bench/shared_memory_bench.cpp, on top of
// bench_support.hpp: fork pinned workers, take medians, print the table.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bench_support.hpp"

namespace mpx::bench {

// --pin cross|same: the parent runs on CPU 0, workers on CPU 1 (cross) or
// CPU 0 too (same); none (default) leaves placement to the scheduler.
inline int& child_cpu() {
  static int cpu = -1;
  return cpu;
}
// Parses --pin; returns the mode to hand to the Python side.
inline std::string setup_pinning(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) != "--pin") continue;
    std::string mode = argv[i + 1];
    if (mode == "cross" || mode == "same") {
      pin_to(0);
      child_cpu() = mode == "cross" ? 1 : 0;
      return mode;
    }
  }
  return "none";
}

// A forked worker running `body`, reaped by join().
inline pid_t spawn(const std::function<void()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (child_cpu() >= 0) pin_to(child_cpu());
    body();
    ::_exit(0);
  }
  return pid;
}
inline void join(pid_t pid) { ::waitpid(pid, nullptr, 0); }



struct Row {
  std::string scenario, unit;
  double mpx = 0;
  std::optional<double> python, bare;
  std::string ratio_label;  // "mpx/python" or "mpx/bare" ...
  double ratio = 0;
  std::string target;       // e.g. ">= 20"
};

inline void print_table(const std::vector<Row>& rows) {
  std::printf("%-34s | %-6s | %12s | %12s | %12s | %-20s | %s\n", "scenario", "unit", "mpx", "python", "bare",
              "ratio", "target");
  std::printf("%s\n", std::string(130, '-').c_str());
  auto cell = [](const std::optional<double>& v) {
    char buf[32];
    if (v)
      std::snprintf(buf, sizeof buf, "%12.4g", *v);
    else
      std::snprintf(buf, sizeof buf, "%12s", "-");
    return std::string(buf);
  };
  for (auto& r : rows) {
    char ratio[64];
    std::snprintf(ratio, sizeof ratio, "%.3g (%s)", r.ratio, r.ratio_label.c_str());
    std::printf("%-34s | %-6s | %12.4g | %s | %s | %-20s | %s\n", r.scenario.c_str(), r.unit.c_str(), r.mpx,
                cell(r.python).c_str(), cell(r.bare).c_str(), ratio, r.target.c_str());
  }
  std::fflush(stdout);
}

// The rows as the common records (python and bare as peers). Rates (units
// ending in "/s") are better higher, times better lower.
inline std::vector<Record> records_of(const std::vector<Row>& rows) {
  std::vector<Record> out;
  for (const auto& r : rows) {
    const bool rate = r.unit.size() >= 2 && r.unit.compare(r.unit.size() - 2, 2, "/s") == 0;
    Record rec{r.scenario, r.unit, r.mpx, {}, rate, r.target.empty() ? "" : "target " + r.ratio_label + " " + r.target};
    if (r.python) rec.peers.emplace_back("python", *r.python);
    if (r.bare) rec.peers.emplace_back("bare", *r.bare);
    out.push_back(std::move(rec));
  }
  return out;
}

inline std::optional<double> lookup(const std::map<std::string, double>& m, const std::string& key) {
  auto it = m.find(key);
  if (it == m.end()) return std::nullopt;
  return it->second;
}

}  // namespace mpx::bench
