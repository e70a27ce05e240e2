// The flagship demo (bash scripts/demo.sh): a log-analytics service built
// from actors in worker processes under a supervisor tree (pipeline.hpp),
// over a generated web access log or any log file you give it. Midway it
// SIGKILLs a worker host; the supervisor restarts it on its mailbox and the
// result stays exact: it is checked against a sequential reference computed
// in one thread of this process. Throughput is timed from the first message
// to the merged result (the tree is started before, as Python's Pool is in
// demo/python/pool_reference.py, run by --compare-python).
//
//   log_analytics [--lines N] [--seed S] [--input FILE] [--output FILE] [--workers W]
//                 [--batch-kib K] [--no-chaos] [--compare-python] [--timeout SECONDS] [--verbose]
//                 [--inject-fault double-count]   (for the tests: shows that the check can fail)
//
// stdout: the report (status table, top paths and clients, latency
// percentiles, requests per minute), the supervision tree with every exit of
// every child, throughput, and "check: OK ..." or "check: MISMATCH ...".
// stderr: one progress line (redrawn in place on a terminal, a plain line
// per second otherwise). Exit code: 0, 1 (mismatch or failure), 2 (usage).
#include <malloc.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "log_format.hpp"
#include "mpx/logging.hpp"
#include "mpx/process.hpp"
#include "pipeline.hpp"

using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::uint64_t lines = 1'000'000;
  std::uint64_t seed = 1;
  std::string input, output;
  std::size_t workers = 0;  // 0: cpu_count()
  std::size_t batch_kib = 4096;
  bool chaos = true, compare_python = false, double_count = false, verbose = false;
  long timeout_s = 300;
};

int usage(const char* argv0, std::ostream& out = std::cerr, int code = 2) {
  out << "usage: " << argv0
            << " [--lines N] [--seed S] [--input FILE] [--output FILE] [--workers W] [--batch-kib K]\n"
               "       [--no-chaos] [--compare-python] [--timeout SECONDS] [--verbose]\n"
               "  --lines N         generate N lines (default 1000000, at most 100000000)\n"
               "  --seed S          the generator's seed (default 1): the same seed, the same log\n"
               "  --input FILE      analyse FILE (combined or common log format) instead\n"
               "  --output FILE     keep the generated log in FILE (default: a temporary file, removed)\n"
               "  --workers W       worker hosts (default cpu_count(), at most 64)\n"
               "  --batch-kib K     batch size (default 4096, 4..65536)\n"
               "  --no-chaos        do not SIGKILL a worker host midway\n"
               "  --compare-python  also run demo/python/pool_reference.py (multiprocessing.Pool)\n"
               "  --timeout S       give up after S seconds of analysis (default 300)\n"
               "  --verbose         the library's log (lifecycle, exit reports) on stderr\n"
               "  --inject-fault double-count   the aggregator merges one batch twice: the check must fail\n";
  return code;
}

std::string grouped(std::uint64_t v) {  // 1234567 -> 1,234,567
  const std::string digits = std::to_string(v);
  std::string s;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s.push_back(',');
    s.push_back(digits[i]);
  }
  return s;
}
std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}
std::string rate(double per_s) {  // 2.38M, 164k
  if (per_s >= 1e6) return fixed(per_s / 1e6, 2) + "M";
  if (per_s >= 1e3) return fixed(per_s / 1e3, 1) + "k";
  return fixed(per_s, 0);
}
std::string megabytes(std::uint64_t bytes) { return fixed(static_cast<double>(bytes) / 1e6, 1) + " MB"; }
std::string pad(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}
std::string lpad(const std::string& s, std::size_t width) {
  return s.size() < width ? std::string(width - s.size(), ' ') + s : s;
}
std::string minute_text(std::int64_t minute) {
  const std::time_t t = static_cast<std::time_t>(minute * 60);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

// The progress line on stderr.
class ProgressLine {
 public:
  explicit ProgressLine(std::uint64_t total_bytes) : total_(total_bytes), tty_(::isatty(2) == 1) {}
  void operator()(const demo::Progress& p) {
    const auto now = Clock::now();
    if (!p.last && !tty_ && (now < next_plain_ || p.lines_merged == 0)) return;
    next_plain_ = now + std::chrono::seconds(1);
    const double done = total_ ? static_cast<double>(p.bytes_merged) / static_cast<double>(total_) : 1.0;
    const double lines_per_s = p.seconds > 0 ? static_cast<double>(p.lines_merged) / p.seconds : 0;
    std::string eta = "-";
    if (p.last) {
      eta = "done";
    } else if (done > 0) {
      eta = fixed(p.seconds * (1 - done) / done, 1) + " s";
    }
    std::string line = "progress: " + lpad(fixed(100 * done, 1), 5) + "% done, " + grouped(p.lines_merged) +
                       " lines, " + rate(lines_per_s) + " lines/s, ETA " + eta + ", restarts " +
                       std::to_string(p.restarts);
    line = tty_ ? "\r\033[K" + line + (p.last ? "\n" : "") : line + "\n";
    [[maybe_unused]] auto n = ::write(2, line.data(), line.size());
  }

 private:
  std::uint64_t total_;
  bool tty_;
  Clock::time_point next_plain_{};
};

struct PythonRun {
  bool ok = false;
  std::string error;
  double seconds = 0;
  nlohmann::json result;
};

// Runs the Pool version on the same file and reads its JSON summary.
PythonRun run_python(const std::string& input, std::size_t workers, std::size_t batch_bytes) {
  PythonRun run;
  const std::string command = "python3 '" MPX_DEMO_PYTHON_SCRIPT "' --processes " + std::to_string(workers) +
                              " --batch-bytes " + std::to_string(batch_bytes) + " '" + input + "'";
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) {
    run.error = "cannot start python3";
    return run;
  }
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int status = ::pclose(pipe);
  if (status != 0) {
    run.error = "python3 failed (status " + std::to_string(status) + ")";
    return run;
  }
  try {
    run.result = nlohmann::json::parse(out);
    run.seconds = run.result.at("seconds").get<double>();
    run.ok = true;
  } catch (const std::exception& e) {
    run.error = std::string("unreadable output: ") + e.what();
  }
  return run;
}

// Where Python's summary differs from ours ("" when it agrees).
std::string python_differences(const nlohmann::json& py, const demo::Stats& s) {
  std::string out;
  auto note = [&](bool same, const char* what) {
    if (!same) out += std::string(out.empty() ? "" : ", ") + what;
  };
  note(py.at("lines").get<std::uint64_t>() == s.lines, "lines");
  note(py.at("malformed").get<std::uint64_t>() == s.malformed, "malformed");
  note(py.at("bytes").get<std::uint64_t>() == s.bytes_sent, "bytes");
  std::map<int, std::uint64_t> status;
  for (const auto& [k, v] : py.at("status").items()) status[std::stoi(k)] = v.get<std::uint64_t>();
  note(status == s.status, "status");
  std::vector<std::pair<std::string, std::uint64_t>> paths;
  for (const auto& e : py.at("top_paths")) paths.emplace_back(e.at(0).get<std::string>(), e.at(1).get<std::uint64_t>());
  note(paths == s.top(s.paths, paths.size()), "top paths");
  note(py.at("distinct_clients").get<std::size_t>() == s.client_bytes.size(), "clients");
  note(py.at("minutes").get<std::size_t>() == s.per_minute.size(), "minutes");
  for (const auto& [name, q] : {std::pair{"p50", 0.5}, {"p99", 0.99}}) {
    const auto ours = s.latency_quantile(q);
    note(py.at(name).is_null() ? !ours : (ours && py.at(name).get<std::uint32_t>() == *ours), name);
  }
  return out;
}

void print_report(const demo::Stats& s) {
  std::ostringstream o;
  o << "\nrequests: " << grouped(s.requests()) << " (" << grouped(s.malformed) << " malformed lines skipped), "
    << megabytes(s.bytes_sent) << " sent to " << grouped(s.client_bytes.size()) << " clients\n";
  o << "\n  status    requests   share\n";
  for (const auto& [code, n] : s.status)
    o << "  " << code << "   " << lpad(grouped(n), 11) << "  " << lpad(fixed(100.0 * static_cast<double>(n) / static_cast<double>(std::max<std::uint64_t>(1, s.requests())), 1), 5) << "%\n";
  o << "\n  top paths                        requests\n";
  for (const auto& [path, n] : s.top(s.paths, 10)) o << "  " << pad(path.substr(0, 30), 30) << lpad(grouped(n), 11) << "\n";
  o << "\n  top clients by bytes                 bytes\n";
  for (const auto& [client, n] : s.top(s.client_bytes, 5))
    o << "  " << pad(client.substr(0, 24), 24) << lpad(grouped(n), 15) << "\n";
  o << "\nlatency ($request_time, ms):";
  bool any = false;
  for (const auto& [name, q] : {std::pair{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p99.9", 0.999}, {"max", 1.0}})
    if (const auto v = s.latency_quantile(q)) {
      o << "  " << name << " " << grouped(*v);
      any = true;
    }
  if (!any) o << " none in this log";
  o << "\n";
  if (!s.per_minute.empty()) {
    auto peak = s.per_minute.begin();
    for (auto it = s.per_minute.begin(); it != s.per_minute.end(); ++it)
      if (it->second > peak->second) peak = it;
    o << "requests per minute: " << grouped(s.per_minute.size()) << " minutes from "
      << minute_text(s.per_minute.begin()->first) << " to " << minute_text(s.per_minute.rbegin()->first)
      << " UTC, mean " << grouped(s.requests() / s.per_minute.size()) << ", peak " << grouped(peak->second) << " at "
      << minute_text(peak->first) << "\n";
  }
  std::cout << o.str();
}

void print_tree(const demo::PipelineResult& r) {
  std::ostringstream o;
  o << "\nsupervision tree (every exit of every child, exit code -N = killed by signal N):\n";
  o << r.root_name << ", pid " << r.root_pid << "\n";
  bool parent_last = false;
  for (const auto& c : r.tree) {
    std::string prefix = c.depth == 1 ? "" : (parent_last ? "   " : "│  ");
    if (c.depth == 1) parent_last = c.last;
    prefix += c.last ? "└─ " : "├─ ";
    std::string kind = c.kind + (c.note.empty() ? "" : " " + c.note);
    o << prefix << pad(c.id, 14 - 3 * static_cast<std::size_t>(c.depth - 1)) << pad(kind, 23) << "restarts "
      << c.restarts << ", exits:";
    if (c.exits.empty()) o << " none reported";
    for (std::size_t i = 0; i < c.exits.size(); ++i) {
      const auto& e = c.exits[i];
      o << (i ? "," : "") << " pid " << e.pid << " -> " << (e.code ? std::to_string(*e.code) : "?") << " (" << e.how
        << ")";
    }
    o << "\n";
  }
  std::cout << o.str();
}

}  // namespace

int main(int argc, char** argv) {
  const auto t_main = Clock::now();
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    try {
      if (arg == "--lines" && has_value) {
        opt.lines = std::stoull(argv[++i]);
      } else if (arg == "--seed" && has_value) {
        opt.seed = std::stoull(argv[++i]);
      } else if (arg == "--input" && has_value) {
        opt.input = argv[++i];
      } else if (arg == "--output" && has_value) {
        opt.output = argv[++i];
      } else if (arg == "--workers" && has_value) {
        opt.workers = std::stoul(argv[++i]);
        if (opt.workers < 1 || opt.workers > 64) return usage(argv[0]);
      } else if (arg == "--batch-kib" && has_value) {
        opt.batch_kib = std::stoul(argv[++i]);
      } else if (arg == "--timeout" && has_value) {
        opt.timeout_s = std::stol(argv[++i]);
      } else if (arg == "--help" || arg == "-h") {
        return usage(argv[0], std::cout, 0);
      } else if (arg == "--verbose") {
        opt.verbose = true;
      } else if (arg == "--no-chaos") {
        opt.chaos = false;
      } else if (arg == "--compare-python") {
        opt.compare_python = true;
      } else if (arg == "--inject-fault" && has_value && std::string(argv[i + 1]) == "double-count") {
        ++i;
        opt.double_count = true;
      } else {
        return usage(argv[0]);
      }
    } catch (const std::exception&) {
      return usage(argv[0]);
    }
  }
  if (opt.lines < 1 || opt.lines > 100'000'000 || opt.batch_kib < 4 || opt.batch_kib > 65536 || opt.timeout_s < 1 ||
      (!opt.input.empty() && !opt.output.empty()))
    return usage(argv[0]);
  if (opt.workers == 0) opt.workers = static_cast<std::size_t>(std::max(1, mpx::cpu_count()));
  // The demo reports exits itself; the library's warnings (an exit report of
  // the kill) would break the progress line.
  mpx::get_logger()->set_level(opt.verbose ? spdlog::level::info : spdlog::level::err);
  // A batch's text and its partial result are megabytes: glibc would map
  // such blocks in fresh pages (mmap) or trim the heap after them, and on a
  // VM a page fault costs about as much as parsing the page. Keep freed
  // memory for the next batch, in every process of the tree (forked from here).
  ::mallopt(M_MMAP_THRESHOLD, 256 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 512 << 20);

  // The generated log, removed at the end unless --output names it.
  struct TempFile {
    std::string path;
    ~TempFile() {
      if (!path.empty()) ::unlink(path.c_str());
    }
  } temp;
  try {
    std::string input = opt.input;
    if (input.empty()) {
      input = opt.output;
      if (input.empty()) {
        const char* dir = std::getenv("TMPDIR");
        temp.path = std::string(dir && *dir ? dir : "/tmp") + "/mpx-demo-access-" + std::to_string(::getpid()) + ".log";
        input = temp.path;
      }
      const auto t = Clock::now();
      const std::uint64_t bytes = demo::generate_log(input, opt.lines, opt.seed);
      std::cout << "generated " << grouped(opt.lines) << " lines of access log (seed " << opt.seed << ", "
                << megabytes(bytes) << ") in " << fixed(std::chrono::duration<double>(Clock::now() - t).count(), 2)
                << " s" << (opt.output.empty() ? "" : ": " + opt.output) << "\n";
    }
    struct stat st {};
    if (::stat(input.c_str(), &st) != 0) {
      std::cerr << "log_analytics: cannot read " << input << "\n";
      return 1;
    }
    const auto input_bytes = static_cast<std::uint64_t>(st.st_size);
    const std::size_t batch_bytes = opt.batch_kib << 10;
    std::cout << "analysing " << input << " (" << megabytes(input_bytes) << ") with " << opt.workers
              << " worker hosts, batches of " << opt.batch_kib << " KiB, "
              << (opt.chaos ? "one worker SIGKILLed midway" : "no chaos") << std::endl;

    demo::PipelineOptions po;
    po.input = input;
    po.input_bytes = input_bytes;
    po.workers = opt.workers;
    po.batch_bytes = batch_bytes;
    po.chaos = opt.chaos;
    po.double_count = opt.double_count;
    po.timeout = std::chrono::seconds(opt.timeout_s);
    ProgressLine progress(input_bytes);
    const demo::PipelineResult r = demo::run_pipeline(po, std::ref(progress));

    // The sequential reference: every line through the same parser, one thread, no batches.
    const auto t_ref = Clock::now();
    demo::Stats reference;
    {
      std::ifstream in(input, std::ios::binary);
      for (std::string line; std::getline(in, line);) reference.add_line(line);
    }
    const double ref_seconds = std::chrono::duration<double>(Clock::now() - t_ref).count();

    std::optional<PythonRun> py;
    if (opt.compare_python) py = run_python(input, opt.workers, batch_bytes);

    if (r.chaos.done)
      std::cout << "chaos: SIGKILLed " << r.chaos.victim << " (pid " << r.chaos.killed_pid << ") at "
                << fixed(r.chaos.at_percent, 0) << "% of the input read"
                << (r.chaos.in_hand >= 0 ? ", parsing batch " + std::to_string(r.chaos.in_hand) : std::string())
                << (r.chaos.new_pid > 0 ? "; the supervisor restarted it as pid " + std::to_string(r.chaos.new_pid) +
                                              " in " + fixed(r.chaos.restart_ms, 1) + " ms on the same mailbox; "
                                        : std::string("; it was not seen restarted; "))
                << r.redelivered << " batch(es) redelivered, " << r.duplicates
                << " duplicate result(s) dropped by the aggregator\n";
    else if (opt.chaos)
      std::cout << "chaos: the input was done before the kill\n";
    print_report(r.stats);
    print_tree(r);
    // Every process of the tree has been waited for: RUSAGE_CHILDREN has the largest of them.
    rusage children{}, self{};
    ::getrusage(RUSAGE_CHILDREN, &children);
    ::getrusage(RUSAGE_SELF, &self);
    std::cout << "memory: peak resident set " << fixed(static_cast<double>(children.ru_maxrss) / 1024, 1)
              << " MB in the largest process of the tree, " << fixed(static_cast<double>(self.ru_maxrss) / 1024, 1)
              << " MB in this one (the reference included), for " << megabytes(input_bytes) << " of input\n";

    const double lines = static_cast<double>(r.stats.lines);
    std::cout << "\nthroughput: " << grouped(r.stats.lines) << " lines in " << fixed(r.seconds, 3) << " s = "
              << rate(lines / r.seconds) << " lines/s ("
              << fixed(static_cast<double>(input_bytes) / 1e6 / r.seconds, 0) << " MB/s), " << r.batches
              << (r.batches == 1 ? " batch, " : " batches, ") << opt.workers << " worker hosts" << (r.chaos.done ? ", the kill and restart included" : "")
              << "\n";
    std::cout << "sequential reference (one thread of this process): " << fixed(ref_seconds, 3) << " s = "
              << rate(lines / ref_seconds) << " lines/s\n";
    if (py) {
      if (py->ok) {
        const std::string diff = python_differences(py->result, r.stats);
        std::cout << "python multiprocessing.Pool (" << opt.workers
                  << " processes, started beforehand as the tree is; same file, same batches): "
                  << fixed(py->seconds, 3) << " s = " << rate(lines / py->seconds) << " lines/s; mpx is "
                  << fixed(py->seconds / r.seconds, 1) << "x its throughput; "
                  << (diff.empty() ? "its counts agree" : "its counts differ: " + diff) << "\n";
      } else {
        std::cout << "python multiprocessing.Pool: not measured: " << py->error << "\n";
      }
    }
    std::cout << "whole run: " << fixed(std::chrono::duration<double>(Clock::now() - t_main).count(), 2)
              << " s, from the start of this program to this line\n";
    const std::string diff = r.stats.differences(reference);
    if (diff.empty()) {
      std::cout << "check: OK: the merged result equals the sequential reference (" << grouped(reference.lines)
                << " lines; status, paths, clients, latency, minutes)\n";
      return 0;
    }
    std::cout << "check: MISMATCH: the merged result differs from the sequential reference in: " << diff << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "\nlog_analytics: " << e.what() << std::endl;
    return 1;
  }
}
