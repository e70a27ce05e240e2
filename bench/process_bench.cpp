// process_bench: start + join of an empty process, mpx side by side with the
// machine's limit and with Python's multiprocessing, in one run.
// Usage: process_bench [--rounds R] [--iters N] [--py-iters N] [--spawn-iters N] [--heap-mib M]
//                      [--heap-iters N] [--no-python] [--quick] [--json FILE]
//        process_bench --loop bare|mpx_fork|mpx_forkserver|mpx_spawn N   (one contender only, for strace/perf)
//
// Contenders (each timed iteration is one complete start + join):
//   bare_fork_exit_waitpid  fork(); the child _exit(0)s; waitpid(). The limit.
//   mpx_fork                mpx::Process p(empty_target); p.start(); p.join();
//                           the Process is constructed and destroyed inside
//                           the timed region.
//   mpx_forkserver          the same with ProcessOptions().with_start_method(
//                           StartMethod::forkserver); the server is started
//                           by set_start_method(forkserver) first thing in
//                           main, before any thread exists.
//   mpx_spawn               the same with StartMethod::spawn: a new run of
//                           this program (it calls mpx::freeze_support()
//                           first thing in main).
//   python_fork/forkserver/spawn
//                           ctx.Process(target=_empty); start(); join(), in
//                           bench/python/process_start_join.py, kept running
//                           as a co-process (started once, warmed up) so its
//                           rounds interleave with ours.
// The mpx contenders run the same registered empty function.
//
// Then process_start_large_heap: the parent touches a heap of M MiB (1024
// unless --heap-mib) and the fork, forkserver and spawn contenders and the
// bare fork start + join again, alternating, --heap-iters times each: what
// a service with a large heap pays per child.
//
// The machine is shared and noisy: the run is R rounds; in each round the
// C++ contenders alternate in blocks of 10 iterations (order rotated per
// block) and the Python co-process runs one round of its own, before or
// after them; each contender reports the median of its round, and the table
// gives the median of the round medians.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "bench_support.hpp"
#include "mpx/forkserver.hpp"
#include "mpx/process.hpp"

extern char** environ;

void empty_target() {}
MPX_REGISTER_FUNCTION(empty_target);

namespace {

using Clock = std::chrono::steady_clock;
double us_since(Clock::time_point t0) { return std::chrono::duration<double, std::micro>(Clock::now() - t0).count(); }

using mpx::bench::median;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "process_bench: %s\n", what);
  std::exit(2);
}

// ---- contenders: one start + join each, in microseconds

double bare_fork_once() {
  auto t0 = Clock::now();
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  if (pid < 0) fail("fork failed");
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  double us = us_since(t0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("bare child did not exit with 0");
  return us;
}

double mpx_fork_once() {
  auto t0 = Clock::now();
  std::optional<int> code;
  {
    mpx::Process p(empty_target);
    p.start();
    p.join();
    code = p.exitcode();
  }
  double us = us_since(t0);
  if (code != 0) fail("mpx fork child did not exit with 0");
  return us;
}

// One start + join of the registered empty function with `method`.
double mpx_start_once(mpx::StartMethod method) {
  auto t0 = Clock::now();
  std::optional<int> code;
  {
    mpx::Process p(mpx::ProcessOptions().with_start_method(method), empty_target);
    p.start();
    p.join();
    code = p.exitcode();
  }
  double us = us_since(t0);
  if (code != 0) fail("an mpx forkserver or spawn child did not exit with 0");
  return us;
}
double mpx_forkserver_once() { return mpx_start_once(mpx::StartMethod::forkserver); }
double mpx_spawn_once() { return mpx_start_once(mpx::StartMethod::spawn); }

double round_median(int iters, double (*once)()) {
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(iters));
  for (int i = 0; i < iters; ++i) samples.push_back(once());
  return median(std::move(samples));
}

// ---- the Python co-process (bench/python/process_start_join.py --serve)

class PythonPeer {
 public:
  PythonPeer(const PythonPeer&) = delete;
  PythonPeer& operator=(const PythonPeer&) = delete;

  // Empty when python3 cannot be started or does not get ready.
  static std::optional<PythonPeer> start() {
    int to_child[2], from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) < 0) return std::nullopt;
    if (::pipe2(from_child, O_CLOEXEC) < 0) {
      ::close(to_child[0]);
      ::close(to_child[1]);
      return std::nullopt;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], 0);  // dup2 clears O_CLOEXEC
    posix_spawn_file_actions_adddup2(&actions, from_child[1], 1);
    std::string script = std::string(MPX_BENCH_PYTHON_DIR) + "/process_start_join.py";
    char* argv[] = {const_cast<char*>("python3"), script.data(), const_cast<char*>("--serve"), nullptr};
    pid_t pid = 0;
    int rc = ::posix_spawnp(&pid, "python3", &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(to_child[0]);
    ::close(from_child[1]);
    if (rc != 0) {
      ::close(to_child[1]);
      ::close(from_child[0]);
      return std::nullopt;
    }
    std::optional<PythonPeer> peer(std::in_place, pid, to_child[1], from_child[0]);
    auto line = peer->read_line(std::chrono::seconds(60));
    if (!line || *line != "ready") return std::nullopt;  // the destructor reaps it
    return peer;
  }

  PythonPeer(pid_t pid, int in, int out) : pid_(pid), in_(in), out_(out) {}
  PythonPeer(PythonPeer&& other) noexcept
      : pid_(std::exchange(other.pid_, 0)),
        in_(std::exchange(other.in_, -1)),
        out_(std::exchange(other.out_, -1)),
        buffer_(std::move(other.buffer_)) {}
  PythonPeer& operator=(PythonPeer&&) = delete;

  ~PythonPeer() {
    if (in_ >= 0) ::close(in_);  // EOF: the script leaves its loop
    if (out_ >= 0) ::close(out_);
    if (pid_ > 0) {
      // Bounded: a peer that does not end within 10 s is killed.
      for (int i = 0; i < 1000; ++i) {
        if (::waitpid(pid_, nullptr, WNOHANG) != 0) return;
        ::usleep(10000);
      }
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  // One round of the three Python contenders: "python_<method>" -> median us.
  std::map<std::string, double> round(int r, int fork_iters, int forkserver_iters, int spawn_iters) {
    std::map<std::string, double> values;
    std::string request = "round " + std::to_string(r) + " " + std::to_string(fork_iters) + " " +
                          std::to_string(forkserver_iters) + " " + std::to_string(spawn_iters) + "\n";
    if (::write(in_, request.data(), request.size()) != static_cast<ssize_t>(request.size())) return values;
    for (;;) {
      auto line = read_line(std::chrono::seconds(300));
      if (!line || *line == "done") break;
      std::istringstream in(*line);
      std::string name;
      double value = 0;
      if (in >> name >> value) values[name] = value;
    }
    return values;
  }

 private:
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return std::nullopt;
      pollfd p{out_, POLLIN, 0};
      int rc = ::poll(&p, 1, static_cast<int>(left));
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0) return std::nullopt;
      char chunk[4096];
      ssize_t n = ::read(out_, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  pid_t pid_;
  int in_;
  int out_;
  std::string buffer_;
};

struct Series {
  std::string scenario;
  std::vector<double> rounds;  // per-round medians, us
  [[nodiscard]] double value() const { return median(rounds); }
};

int int_arg(int argc, char** argv, const char* flag, int fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], flag) == 0) return std::max(1, std::atoi(argv[i + 1]));
  return fallback;
}
bool has_flag(int argc, char** argv, const char* flag) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], flag) == 0) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  mpx::freeze_support();  // where a spawned child takes over
  // First, while this process has a single thread: fork the mpx fork server.
  // The default stays fork; the forkserver contender asks for it per Process.
  mpx::set_start_method(mpx::StartMethod::forkserver);
  mpx::set_start_method(mpx::StartMethod::fork);

  // --loop <contender> <n>: only that contender, n times, no table; for
  // strace -f -c / perf record runs.
  for (int i = 1; i + 2 < argc; ++i) {
    if (std::strcmp(argv[i], "--loop") != 0) continue;
    const std::map<std::string, double (*)()> by_name = {
        {"bare", bare_fork_once},
        {"mpx_fork", mpx_fork_once},
        {"mpx_forkserver", mpx_forkserver_once},
        {"mpx_spawn", mpx_spawn_once}};
    auto it = by_name.find(argv[i + 1]);
    if (it == by_name.end()) fail("--loop takes bare, mpx_fork, mpx_forkserver or mpx_spawn");
    std::printf("%s: median %.1f us\n", argv[i + 1], round_median(std::max(1, std::atoi(argv[i + 2])), it->second));
    return 0;
  }

  bool quick = has_flag(argc, argv, "--quick");
  int rounds = int_arg(argc, argv, "--rounds", quick ? 3 : 7);
  int iters = int_arg(argc, argv, "--iters", quick ? 50 : 200);
  int py_iters = int_arg(argc, argv, "--py-iters", quick ? 20 : 60);
  int spawn_iters = int_arg(argc, argv, "--spawn-iters", quick ? 3 : 6);
  int heap_mib = int_arg(argc, argv, "--heap-mib", quick ? 256 : 1024);
  int heap_iters = int_arg(argc, argv, "--heap-iters", quick ? 10 : 40);
  bool python = !has_flag(argc, argv, "--no-python");

  std::printf("process_bench: start + join of an empty process; %d rounds, %d iterations per round for "
              "bare/mpx, %d for Python fork/forkserver, %d for Python spawn\n",
              rounds, iters, py_iters, spawn_iters);
  if (python) {
    std::printf("process_bench: starting the Python side (bench/python/process_start_join.py --serve)...\n");
    std::fflush(stdout);
  }
  std::optional<PythonPeer> peer = python ? PythonPeer::start() : std::nullopt;
  if (python && !peer) std::fprintf(stderr, "warning: the Python side could not be started; Python rows are empty\n");

  // Warm-up, untimed: page in the code paths of every C++ contender.
  for (int i = 0; i < 20; ++i) {
    bare_fork_once();
    mpx_fork_once();
    mpx_forkserver_once();
    mpx_spawn_once();
  }

  Series bare{"bare_fork_exit_waitpid", {}}, mpx_fork{"mpx_fork", {}}, mpx_server{"mpx_forkserver", {}},
      mpx_spawn{"mpx_spawn", {}};
  Series py_fork{"python_fork", {}}, py_server{"python_forkserver", {}}, py_spawn{"python_spawn", {}};
  bool python_ok = peer.has_value();

  // One round: the C++ contenders alternate in blocks of kBlock iterations
  // (so a burst of load hits all of them alike), and the Python round runs
  // before them on odd rounds and after them on even ones.
  constexpr int kBlock = 10;
  struct Cpp {
    Series* series;
    double (*once)();
    std::vector<double> samples;
  };
  std::vector<Cpp> cpp = {{&bare, bare_fork_once, {}}, {&mpx_fork, mpx_fork_once, {}},
                          {&mpx_server, mpx_forkserver_once, {}}, {&mpx_spawn, mpx_spawn_once, {}}};
  auto cpp_round = [&](int r) {
    for (auto& c : cpp) c.samples.clear();
    for (int done = 0; done < iters; done += kBlock) {
      for (std::size_t k = 0; k < cpp.size(); ++k) {  // order rotates per block
        auto& c = cpp[(k + static_cast<std::size_t>(r + done / kBlock)) % cpp.size()];
        for (int i = done; i < std::min(iters, done + kBlock); ++i) c.samples.push_back(c.once());
      }
    }
    for (auto& c : cpp) c.series->rounds.push_back(median(c.samples));
  };
  auto python_round = [&](int r) {
    if (!python_ok) return;
    auto values = peer->round(r, py_iters, py_iters, spawn_iters);
    if (!values.count("python_fork") || !values.count("python_forkserver") || !values.count("python_spawn")) {
      std::fprintf(stderr, "warning: the Python side failed in round %d; Python rows are partial\n", r + 1);
      python_ok = false;
      return;
    }
    py_fork.rounds.push_back(values["python_fork"]);
    py_server.rounds.push_back(values["python_forkserver"]);
    py_spawn.rounds.push_back(values["python_spawn"]);
  };
  for (int r = 0; r < rounds; ++r) {
    if (r % 2) python_round(r);
    cpp_round(r);
    if (r % 2 == 0) python_round(r);
    std::printf("round %d/%d: bare %.0f us, mpx fork %.0f us, mpx forkserver %.0f us, mpx spawn %.0f us", r + 1,
                rounds, bare.rounds.back(), mpx_fork.rounds.back(), mpx_server.rounds.back(),
                mpx_spawn.rounds.back());
    if (static_cast<int>(py_fork.rounds.size()) == r + 1)
      std::printf(", python fork %.0f us, forkserver %.0f us, spawn %.0f us", py_fork.rounds.back(),
                  py_server.rounds.back(), py_spawn.rounds.back());
    std::printf("\n");
    std::fflush(stdout);
  }
  peer.reset();

  const double bare_us = bare.value();
  const bool have_python = !py_fork.rounds.empty();
  const double py_fork_us = have_python ? py_fork.value() : 0.0;

  std::printf("\n%-24s | %24s | %18s | %26s | %s\n", "scenario", "median us per start+join", "ratio to bare fork",
              "mpx speedup vs Python fork", "round medians min..max us");
  std::printf("%s\n", std::string(128, '-').c_str());
  for (const Series* s : {&bare, &mpx_fork, &mpx_server, &mpx_spawn, &py_fork, &py_server, &py_spawn}) {
    if (s->rounds.empty()) {
      std::printf("%-24s | %24s | %18s | %26s | %s\n", s->scenario.c_str(), "-", "-", "-", "-");
      continue;
    }
    double v = s->value();
    char speedup[32] = "-";
    if (s->scenario.rfind("mpx_", 0) == 0 && have_python)
      std::snprintf(speedup, sizeof speedup, "%.2fx", py_fork_us / v);
    auto [lo, hi] = std::minmax_element(s->rounds.begin(), s->rounds.end());
    std::printf("%-24s | %24.1f | %18.2f | %26s | %.0f..%.0f\n", s->scenario.c_str(), v, v / bare_us, speedup, *lo,
                *hi);
  }

  std::printf("\ntargets:\n");
  double fork_ratio = mpx_fork.value() / bare_us;
  std::printf("  mpx fork within 2x of bare fork:         %.2fx bare  -> %s\n", fork_ratio,
              fork_ratio <= 2.0 ? "PASS" : "MISS");
  if (have_python) {
    double speedup = py_fork_us / mpx_fork.value();
    std::printf("  mpx fork at least 5x faster than Python fork: %.2fx   -> %s\n", speedup,
                speedup >= 5.0 ? "PASS" : "MISS");
  } else {
    std::printf("  mpx fork at least 5x faster than Python fork: no Python figure -> MISS\n");
  }
  if (!py_server.rounds.empty())
    std::printf("  (info) mpx forkserver vs Python forkserver: %.2fx faster\n", py_server.value() / mpx_server.value());
  if (!py_spawn.rounds.empty())
    std::printf("  (info) mpx spawn vs Python spawn: %.2fx faster\n", py_spawn.value() / mpx_spawn.value());
  std::printf("\nratios are of the medians of this run (median of %d round medians each); the C++ contenders "
              "alternate every %d iterations, the Python rounds interleave with theirs. Placement left to the "
              "scheduler.\n",
              rounds, kBlock);

  const auto peers = [&](const char* python_key, double python_us) {
    std::vector<std::pair<std::string, double>> out{{"bare_fork_exit_waitpid", bare_us}};
    if (python_us > 0) out.emplace_back(python_key, python_us);
    return out;
  };
  const double py_server_us = py_server.rounds.empty() ? 0.0 : py_server.value();
  const double py_spawn_us = py_spawn.rounds.empty() ? 0.0 : py_spawn.value();

  // ---- process_start_large_heap: the same starts from a parent with a large touched heap.
  std::printf("\nprocess_start_large_heap: touching %d MiB in the parent, then %d start + join of each, "
              "alternating...\n",
              heap_mib, heap_iters);
  std::fflush(stdout);
  std::vector<char> heap(static_cast<std::size_t>(heap_mib) << 20);
  for (std::size_t i = 0; i < heap.size(); i += 4096) heap[i] = static_cast<char>(i);
  struct HeapRun {
    const char* name;
    double (*once)();
    std::vector<double> samples;
  };
  std::vector<HeapRun> heap_runs = {{"bare_fork_exit_waitpid", bare_fork_once, {}},
                                    {"fork", mpx_fork_once, {}},
                                    {"forkserver", mpx_forkserver_once, {}},
                                    {"spawn", mpx_spawn_once, {}}};
  for (int i = 0; i < heap_iters; ++i) {
    for (std::size_t k = 0; k < heap_runs.size(); ++k) {
      auto& h = heap_runs[(k + static_cast<std::size_t>(i)) % heap_runs.size()];
      h.samples.push_back(h.once());
    }
  }
  std::printf("%-32s | %14s | %14s\n", "with the heap", "median us", "p99 us");
  for (auto& h : heap_runs) {
    std::printf("%-32s | %14.1f | %14.1f\n", h.name, median(h.samples), mpx::bench::p99(h.samples));
  }
  const double heap_bare_us = median(heap_runs[0].samples);
  const std::string heap_note = "start + join from a parent with " + std::to_string(heap_mib) +
                                " MiB touched; median of " + std::to_string(heap_iters);
  const auto heap_peers = [&](std::size_t self) {
    std::vector<std::pair<std::string, double>> out{{"bare_fork_exit_waitpid", heap_bare_us}};
    for (std::size_t k = 1; k < heap_runs.size(); ++k)
      if (k != self) out.emplace_back(std::string("mpx_") + heap_runs[k].name, median(heap_runs[k].samples));
    return out;
  };
  heap.clear();
  heap.shrink_to_fit();

  const std::vector<mpx::bench::Record> records{
      {"process_start_join_fork", "us", mpx_fork.value(), peers("python_fork", py_fork_us), false,
       "start + join of an empty process; median of round medians"},
      {"process_start_join_forkserver", "us", mpx_server.value(), peers("python_forkserver", py_server_us), false,
       "start + join of an empty process; median of round medians"},
      {"process_start_join_spawn", "us", mpx_spawn.value(), peers("python_spawn", py_spawn_us), false,
       "start + join of an empty process; median of round medians"},
      {"process_start_large_heap_fork", "us", median(heap_runs[1].samples), heap_peers(1), false, heap_note},
      {"process_start_large_heap_forkserver", "us", median(heap_runs[2].samples), heap_peers(2), false, heap_note},
      {"process_start_large_heap_spawn", "us", median(heap_runs[3].samples), heap_peers(3), false, heap_note},
  };
  return mpx::bench::write_json(mpx::bench::parse_options(argc, argv).json_path, "process_bench", records) ? 0 : 1;
}
