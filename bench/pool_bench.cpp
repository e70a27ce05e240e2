// Pool benchmarks, side by side in one run with Python's multiprocessing.Pool
// and concurrent.futures.ProcessPoolExecutor (bench/python/pool_bench.py):
//   pool_map_trivial            map of x + 1 over 10^7 ints, 2 workers (items/s; goal >= 10x Pool.map)
//   pool_apply_async            10^5 apply_async, then get() of each (tasks/s; goal >= 20x)
//   pool_imap_unordered_sleepy  tasks sleeping a random 0-2 ms: total time / ideal
//                               (sum of sleeps / 2 workers); goal within 1.10. Peers
//                               bare_threads: the same sleeps in 2 plain threads
//                               (the machine's limit: each sleep's overshoot) at
//                               Linux's default timer slack (50 us), and
//                               bare_threads_1us at the pool workers' 1 us
//   pool_worker_lost_recovery   SIGKILL of the worker running a task -> the task
//                               retried and answered, and the pool back at 2 workers
//                               (ms; peer: the machine's bare fork + exit + wait;
//                               Python's Pool hangs forever here, the executor breaks)
// Every figure is the median of --repeat runs. --json FILE writes one record
// per scenario; --quick runs smaller sizes; --no-python skips the peers.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <ranges>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "mpx/pool.hpp"

using mpx::bench::Clock;
using namespace std::chrono_literals;

namespace {

int trivial(int x) { return x + 1; }
double nap(double ms) {
  std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms));
  return ms;
}
// The first run writes its pid into `marker` and blocks; a retry returns at once.
int hang_first_time(const std::string& marker) {
  const int fd = ::open(marker.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd < 0) return 1;
  const std::string pid = std::to_string(::getpid());
  [[maybe_unused]] const auto n = ::write(fd, pid.data(), pid.size());
  ::close(fd);
  for (;;) ::pause();
}

using mpx::bench::median_of;

double bare_fork_wait_ms() {
  const auto t0 = Clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double worker_lost_recovery_ms(mpx::Pool& pool) {
  const std::string marker = "/tmp/mpx-pool-bench." + std::to_string(::getpid());
  ::unlink(marker.c_str());
  auto result = pool.apply_async(hang_first_time, marker);
  pid_t victim = 0;
  while (victim == 0) {  // until the task runs and has said where
    std::ifstream in(marker);
    in >> victim;
    if (victim == 0) std::this_thread::sleep_for(100us);
  }
  const auto t0 = Clock::now();
  ::kill(victim, SIGKILL);
  (void)result.get(30s);
  for (;;) {
    const auto pids = pool.worker_pids();
    if (pids.size() == 2 && std::find(pids.begin(), pids.end(), victim) == pids.end()) break;
    std::this_thread::yield();
  }
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  ::unlink(marker.c_str());
  return ms;
}

// The machine's limit for the sleepy scenario: two plain threads of this
// process take the same sleeps from a shared index, no pool. What it loses
// to the ideal is the timer's overshoot of each sleep and the tail.
// `slack_ns` 0 keeps the process' timer slack.
double bare_threads_sleepy_ratio(const std::vector<double>& sleeps, double ideal_s, unsigned long slack_ns) {
  std::atomic<std::size_t> next{0};
  const auto t0 = Clock::now();
  auto work = [&] {
    if (slack_ns != 0) ::prctl(PR_SET_TIMERSLACK, slack_ns, 0, 0, 0);  // this thread only
    for (std::size_t i; (i = next.fetch_add(1)) < sleeps.size();) (void)nap(sleeps[i]);
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  return mpx::bench::seconds_since(t0) / ideal_s;
}

using Row = mpx::bench::Record;

}  // namespace

int main(int argc, char** argv) {
  const auto opt = mpx::bench::parse_options(argc, argv);
  const int n_map = opt.quick ? 1'000'000 : 10'000'000;
  const int n_apply = opt.quick ? 20'000 : 100'000;
  const int n_sleepy = opt.quick ? 500 : 2000;

  std::vector<double> sleeps;
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> dist(0.0, 2.0);
  for (int i = 0; i < n_sleepy; ++i) sleeps.push_back(dist(rng));
  double ideal_s = 0;
  for (double ms : sleeps) ideal_s += ms / 1000.0 / 2;

  double map_rate = 0, apply_rate = 0, sleepy_ratio = 0, bare_sleepy_ratio = 0, bare_sleepy_1us_ratio = 0, recovery_ms = 0, bare_ms = 0;
  try {
    mpx::Pool pool(mpx::PoolOptions().with_processes(2).with_retries(1));
    (void)pool.map(trivial, std::views::iota(0, 1000));  // warm up
    map_rate = median_of(opt.repeat, [&] {
      const auto t0 = Clock::now();
      const auto out = pool.map(trivial, std::views::iota(0, n_map));
      const double rate = n_map / mpx::bench::seconds_since(t0);
      if (out.back() != n_map) std::fprintf(stderr, "pool_bench: wrong map result\n");
      return rate;
    });
    apply_rate = median_of(opt.repeat, [&] {
      const auto t0 = Clock::now();
      std::vector<mpx::AsyncResult<int>> results;
      results.reserve(n_apply);
      for (int i = 0; i < n_apply; ++i) results.push_back(pool.apply_async(trivial, i));
      long long sum = 0;
      for (auto& r : results) sum += r.get();
      return n_apply / mpx::bench::seconds_since(t0);
    });
    sleepy_ratio = median_of(opt.repeat, [&] {
      const auto t0 = Clock::now();
      for ([[maybe_unused]] double ms : pool.imap_unordered(nap, sleeps)) {
      }
      return mpx::bench::seconds_since(t0) / ideal_s;
    });
    bare_sleepy_ratio = median_of(opt.repeat, [&] { return bare_threads_sleepy_ratio(sleeps, ideal_s, 0); });
    bare_sleepy_1us_ratio = median_of(opt.repeat, [&] { return bare_threads_sleepy_ratio(sleeps, ideal_s, 1000); });
    recovery_ms = median_of(std::max(opt.repeat, 5), [&] { return worker_lost_recovery_ms(pool); });
    bare_ms = median_of(std::max(opt.repeat, 5), bare_fork_wait_ms);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pool_bench: %s\n", e.what());
    return 1;
  }

  std::map<std::string, double> py;
  if (opt.python) py = mpx::bench::run_python("pool_bench.py", mpx::bench::python_args(opt));
  auto peer = [&](const std::string& key) { return py.count(key) ? py[key] : 0.0; };

  std::vector<Row> rows{
      {"pool_map_trivial", "items/s", map_rate,
       {{"python_pool", peer("pool_map_trivial_pool")}, {"python_executor", peer("pool_map_trivial_executor")}},
       true, "goal >= 10x python_pool"},
      {"pool_apply_async", "tasks/s", apply_rate,
       {{"python_pool", peer("pool_apply_async_pool")}, {"python_executor", peer("pool_apply_async_executor")}},
       true, "goal >= 20x python_pool"},
      {"pool_imap_unordered_sleepy", "x ideal", sleepy_ratio,
       {{"python_pool", peer("pool_imap_unordered_sleepy_pool")}, {"bare_threads", bare_sleepy_ratio},
        {"bare_threads_1us", bare_sleepy_1us_ratio}},
       false,
       "total / (sum of sleeps / 2); goal <= 1.10; bare_threads: 2 threads of one process, no pool (the timer's "
       "overshoot at the default 50 us slack; _1us: at the pool workers' 1 us)"},
      {"pool_worker_lost_recovery", "ms", recovery_ms, {{"bare_fork_wait", bare_ms}}, false,
       "python: Pool hangs forever, ProcessPoolExecutor breaks"},
  };

  mpx::bench::print_records(rows);
  if (!mpx::bench::write_json(opt.json_path, "pool_bench", rows)) return 1;
  return 0;
}
