// Shared by every bench/<name>_bench.cpp: the clock, CPU pinning, the common
// command line (--quick, --no-python, --repeat N) and running the Python side
// (bench/python/<script>) whose "<scenario> <value> [unit]" lines it collects.
#pragma once

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>

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

// The options most benchmarks take: [--quick] [--no-python] [--repeat N].
struct Options {
  bool quick = false;
  bool python = true;
  int repeat = 3;
};
inline Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") o.quick = true;
    if (a == "--no-python") o.python = false;
    if (a == "--repeat" && i + 1 < argc) o.repeat = std::max(1, std::atoi(argv[++i]));
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

}  // namespace mpx::bench
