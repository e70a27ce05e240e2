// queue_bench: mpx::Queue against Python's multiprocessing.Queue and against
// the machine's limits, measured in one run, printed side by side.
//
//   queue_bench [--quick] [--no-python] [--repeat N] [--json FILE]
//   (throughput: best of N runs, default 3; memory: median of N)
//
// Scenarios (names as in the table):
//   queue_spsc_int64     Queue<int64_t>, 1 producer process -> 1 consumer process
//   queue_spsc_1k        1 KiB std::string items, 1 -> 1
//   queue_spsc_int64_grow, _fixed, queue_spsc_1k_grow, _fixed
//                        the same with QueueOptions::grow_cells on and off
//   queue_spsc_100b      100-byte std::string items, 1 -> 1 (the actors' common size)
//   queue_spsc_1m        1 MiB std::string items, 1 -> 1, in GB/s
//   queue_mpmc_4x4       Queue<int64_t>, 4 producer processes -> 4 consumer processes
//   queue_mpmc_4x4_fixed the same with QueueOptions::grow_cells off
//   queue_memory_*      1,000 default Queue<std::string>: resident memory
//                       (RssShmem) and commit charge (Committed_AS, which is
//                       system-wide: other programs add noise) per queue,
//                       idle and after 300 items of 100 bytes each went
//                       through one at a time
//   queue_memory_held    one default Queue<std::string> holding 1,000 items
//                        of 100 bytes: resident memory (RssShmem), KiB
// --json FILE writes one record per row: name, unit, mpx, python (0: none).
// Limits: bare_ring (a bare SPSC shared-memory ring, one cache line per
// 8-byte message, no claims, no serialization, busy-spinning), memcpy of
// 1 MiB blocks in cache and streaming through 64 MiB (one core).
// The two sides of the 1 -> 1 scenarios are pinned to CPUs 0 and 1 (so is
// Python's); the 4 x 4 scenario is not pinned.
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mpx/detail/shared_mapping.hpp"
#include "bench_support.hpp"
#include "mpx/queue.hpp"

using namespace mpx::bench;

namespace {

// The two sides of a 1 -> 1 scenario run on different cores (pin_to), for
// mpx, the bare ring and Python alike.

// Runs fn in a forked child and returns its pid; the child _exits with fn's result.
template <class F>
pid_t spawn(F fn) {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(fn());
  return pid;
}
int reap(pid_t pid) {
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

struct Shared {
  std::atomic<int> go{0};
  std::atomic<int> ready{0};
};

// A start line shared by the processes of one measurement.
class StartLine {
 public:
  StartLine() : map_(mpx::detail::SharedMapping::anonymous(4096)), s_(new (map_.data()) Shared{}) {}
  void arrive_and_wait() {
    s_->ready.fetch_add(1);
    while (s_->go.load(std::memory_order_acquire) == 0) {
    }
  }
  void release_when(int n) {
    while (s_->ready.load() < n) {
    }
    s_->go.store(1, std::memory_order_release);
  }

 private:
  mpx::detail::SharedMapping map_;
  Shared* s_;
};

// ---- machine limits

// A bare SPSC ring between two processes: one 64-byte slot (a cache line, as
// an mpx cell) per 8-byte message, publishing each message with one release
// store, busy-spinning, cached copies of the other side's index. No claims,
// no fault tolerance, no blocking: the floor under any cross-process queue
// that publishes messages one by one.
double bare_ring(std::size_t n) {
  constexpr std::size_t kSlots = 1 << 12;
  struct alignas(64) Idx {
    std::atomic<std::uint64_t> v{0};
  };
  struct alignas(64) Slot {
    std::uint64_t value;
  };
  auto map = mpx::detail::SharedMapping::anonymous(sizeof(Idx) * 2 + kSlots * sizeof(Slot));
  auto* head = new (map.data()) Idx{};
  auto* tail = new (static_cast<char*>(map.data()) + sizeof(Idx)) Idx{};
  auto* slots = reinterpret_cast<Slot*>(static_cast<char*>(map.data()) + 2 * sizeof(Idx));
  StartLine line;
  pid_t prod = spawn([&] {
    pin_to(1);
    line.arrive_and_wait();
    std::uint64_t cached_head = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      while (i - cached_head >= kSlots) cached_head = head->v.load(std::memory_order_acquire);
      slots[i & (kSlots - 1)].value = i;
      tail->v.store(i + 1, std::memory_order_release);
    }
    return 0;
  });
  pin_to(0);
  line.release_when(1);
  auto t0 = Clock::now();
  std::uint64_t cached_tail = 0, sum = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    while (cached_tail <= i) cached_tail = tail->v.load(std::memory_order_acquire);
    sum += slots[i & (kSlots - 1)].value;
    head->v.store(i + 1, std::memory_order_release);
  }
  double dt = seconds_since(t0);
  unpin();
  reap(prod);
  if (sum != n * (n - 1) / 2) std::fprintf(stderr, "bare ring checksum mismatch\n");
  return static_cast<double>(n) / dt;
}

// memcpy of 1 MiB blocks streaming through 64 MiB buffers (out of cache),
// MEASUREMENTS.md's "memcpy, 64 MiB" figure.
double memcpy_cold_gbs(int reps) {
  constexpr std::size_t kBlock = 1 << 20, kSpan = 64 << 20;
  std::vector<char> a(kSpan, 1), b(kSpan, 2);
  auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) {
    std::size_t off = (static_cast<std::size_t>(i) * kBlock) % kSpan;
    std::memcpy(b.data() + off, a.data() + off, kBlock);
    asm volatile("" : : "r"(b.data()) : "memory");
  }
  return static_cast<double>(kBlock) * reps / seconds_since(t0) / 1e9;
}

double memcpy_gbs(std::size_t bytes, int reps) {
  std::vector<char> a(bytes, 1), b(bytes, 2);
  std::memcpy(b.data(), a.data(), bytes);
  auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) {
    a[static_cast<std::size_t>(i) % bytes] = static_cast<char>(i);
    std::memcpy(b.data(), a.data(), bytes);
    asm volatile("" : : "r"(b.data()) : "memory");
  }
  return static_cast<double>(bytes) * reps / seconds_since(t0) / 1e9;
}

// ---- mpx

double mpx_spsc_int64(std::size_t n, const mpx::QueueOptions& options = {}) {
  mpx::Queue<std::int64_t> q(0, options);
  StartLine line;
  pid_t prod = spawn([&] {
    pin_to(1);
    line.arrive_and_wait();
    for (std::size_t i = 0; i < n; ++i) q.put(static_cast<std::int64_t>(i));
    return 0;
  });
  pin_to(0);
  line.release_when(1);
  auto t0 = Clock::now();
  std::int64_t expect = 0;
  bool ok = true;
  for (std::size_t i = 0; i < n; ++i) ok &= (q.get() == expect++);
  double dt = seconds_since(t0);
  unpin();
  reap(prod);
  if (!ok) std::fprintf(stderr, "spsc int64: order mismatch\n");
  return static_cast<double>(n) / dt;
}

double mpx_spsc_string(std::size_t n, std::size_t size, const mpx::QueueOptions& options = {}) {
  mpx::Queue<std::string> q(0, options);
  StartLine line;
  pid_t prod = spawn([&] {
    std::string item(size, 'x');
    pin_to(1);
    line.arrive_and_wait();
    for (std::size_t i = 0; i < n; ++i) {
      item[0] = static_cast<char>('a' + i % 26);
      q.put(item);
    }
    return 0;
  });
  pin_to(0);
  line.release_when(1);
  auto t0 = Clock::now();
  bool ok = true;
  for (std::size_t i = 0; i < n; ++i) {
    std::string s = q.get();
    ok &= s.size() == size && s[0] == static_cast<char>('a' + i % 26);
  }
  double dt = seconds_since(t0);
  unpin();
  reap(prod);
  if (!ok) std::fprintf(stderr, "spsc string: content mismatch\n");
  return static_cast<double>(n) / dt;
}

double mpx_mpmc_int64(std::size_t n, int producers, int consumers, const mpx::QueueOptions& options = {}) {
  mpx::Queue<std::int64_t> q(0, options);
  mpx::Queue<std::int64_t> sums;
  StartLine line;
  std::vector<pid_t> kids;
  std::size_t per = n / static_cast<std::size_t>(producers);
  for (int p = 0; p < producers; ++p)
    kids.push_back(spawn([&, p] {
      line.arrive_and_wait();
      for (std::size_t i = 0; i < per; ++i) q.put(static_cast<std::int64_t>(p * per + i));
      return 0;
    }));
  std::vector<pid_t> cons;
  for (int c = 0; c < consumers; ++c)
    cons.push_back(spawn([&] {
      line.arrive_and_wait();
      std::int64_t sum = 0, count = 0;
      for (;;) {
        std::int64_t v = q.get();
        if (v < 0) break;
        sum += v;
        ++count;
      }
      sums.put(count);
      return 0;
    }));
  line.release_when(producers + consumers);
  auto t0 = Clock::now();
  for (pid_t k : kids) reap(k);
  for (int c = 0; c < consumers; ++c) q.put(-1);
  for (pid_t k : cons) reap(k);
  double dt = seconds_since(t0);
  std::int64_t total = 0;
  for (int c = 0; c < consumers; ++c) total += sums.get();
  if (static_cast<std::size_t>(total) != per * static_cast<std::size_t>(producers))
    std::fprintf(stderr, "mpmc: %lld items arrived of %zu\n", static_cast<long long>(total), per * producers);
  return static_cast<double>(per * static_cast<std::size_t>(producers)) / dt;
}

// ---- memory

// A "Key:   N kB" line of a /proc file, in KiB (0 if missing).
double proc_kib(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::atof(line.c_str() + key.size() + 1);
  return 0;
}

struct QueueMemory {
  double idle_resident_kib = 0;  // per queue
  double used_resident_kib = 0;
  double committed_kib = 0;
};

// Resident shared memory is this process' RssShmem: the queues' rings are
// its only shared mappings while this runs (children made by fork hold none).
QueueMemory queue_memory(std::size_t queues, int items) {
  const double rss0 = proc_kib("/proc/self/status", "RssShmem");
  const double commit0 = proc_kib("/proc/meminfo", "Committed_AS");
  QueueMemory m;
  {
    std::vector<mpx::Queue<std::string>> qs(queues);
    m.committed_kib = (proc_kib("/proc/meminfo", "Committed_AS") - commit0) / static_cast<double>(queues);
    m.idle_resident_kib = (proc_kib("/proc/self/status", "RssShmem") - rss0) / static_cast<double>(queues);
    std::string item(100, 'x');
    for (auto& q : qs)
      for (int i = 0; i < items; ++i) {
        q.put(item);
        (void)q.get();
      }
    m.used_resident_kib = (proc_kib("/proc/self/status", "RssShmem") - rss0) / static_cast<double>(queues);
  }
  return m;
}

// Resident KiB of one queue while it holds `items` items of 100 bytes.
double queue_held_kib(int items) {
  const double rss0 = proc_kib("/proc/self/status", "RssShmem");
  mpx::Queue<std::string> q;
  const std::string item(100, 'x');
  for (int i = 0; i < items; ++i) q.put(item);
  const double kib = proc_kib("/proc/self/status", "RssShmem") - rss0;
  for (int i = 0; i < items; ++i) (void)q.get();
  return kib;
}

// ---- Python

void row(const char* name, const char* unit, double mpx, double python, double limit, const char* limit_name) {
  std::printf("%-18s %-8s %14.4g", name, unit, mpx);
  if (python > 0)
    std::printf(" %14.4g %9.1fx", python, mpx / python);
  else
    std::printf(" %14s %10s", "-", "-");
  if (limit > 0)
    std::printf(" %14.4g %7.1f%% of %s", limit, 100.0 * mpx / limit, limit_name);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_options(argc, argv);
  const bool quick = opt.quick;
  const int repeat = opt.repeat;
  const std::size_t n_int = quick ? 2'000'000 : 20'000'000;
  const std::size_t n_1k = quick ? 200'000 : 1'000'000;
  const std::size_t n_1m = quick ? 200 : 2000;
  const std::size_t n_mpmc = quick ? 2'000'000 : 10'000'000;

  // Best of `repeat` runs of every measurement (mpx, limits and Python alike):
  // the machine is shared, and interference only ever makes a run slower.
  auto best = [&](auto f) {
    double b = 0;
    for (int i = 0; i < repeat; ++i) b = std::max(b, f());
    return b;
  };
  double ring = best([&] { return bare_ring(n_int * 2); });
  double mc = best([&] { return memcpy_gbs(1 << 20, quick ? 500 : 3000); });
  double mc_cold = best([&] { return memcpy_cold_gbs(quick ? 500 : 3000); });
  double spsc = best([&] { return mpx_spsc_int64(n_int); });
  double s1k = best([&] { return mpx_spsc_string(n_1k, 1024); });
  double s100 = best([&] { return mpx_spsc_string(n_1k, 100); });
  double s1m = best([&] { return mpx_spsc_string(n_1m, 1 << 20) * (1 << 20) / 1e9; });
  // The same two with the ring's cells growing and not (whatever the default is).
  mpx::QueueOptions grow_on, grow_off;
  grow_on.grow_cells = true;
  grow_off.grow_cells = false;
  double spsc_grow = best([&] { return mpx_spsc_int64(n_int, grow_on); });
  double spsc_fixed = best([&] { return mpx_spsc_int64(n_int, grow_off); });
  double s1k_grow = best([&] { return mpx_spsc_string(n_1k, 1024, grow_on); });
  double s1k_fixed = best([&] { return mpx_spsc_string(n_1k, 1024, grow_off); });
  double mpmc = best([&] { return mpx_mpmc_int64(n_mpmc, 4, 4); });
  double mpmc_fixed = best([&] { return mpx_mpmc_int64(n_mpmc, 4, 4, grow_off); });
  std::vector<QueueMemory> mems;
  for (int i = 0; i < repeat; ++i) mems.push_back(queue_memory(1000, 300));
  auto median_mem = [&](double QueueMemory::*field) {
    std::vector<double> v;
    for (const auto& m : mems) v.push_back(m.*field);
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double mem_idle = median_mem(&QueueMemory::idle_resident_kib);
  const double mem_used = median_mem(&QueueMemory::used_resident_kib);
  const double mem_commit = median_mem(&QueueMemory::committed_kib);
  std::vector<double> helds;
  for (int i = 0; i < repeat; ++i) helds.push_back(queue_held_kib(1000));
  std::sort(helds.begin(), helds.end());
  const double mem_held = helds[helds.size() / 2];
  std::map<std::string, double> py;
  if (opt.python) py = run_python("queue_bench.py", python_args(opt));
  auto p = [&](const char* k) { return py.count(k) ? py[k] : 0.0; };

  std::printf("%-18s %-8s %14s %14s %10s %14s\n", "scenario", "unit", "mpx", "python", "mpx/py", "machine limit");
  row("queue_spsc_int64", "items/s", spsc, p("queue_spsc_int64"), ring, "bare_ring");
  row("queue_spsc_1k", "items/s", s1k, p("queue_spsc_1k"), 0, "");
  row("queue_spsc_int64_grow", "items/s", spsc_grow, 0, 0, "");
  row("queue_spsc_int64_fixed", "items/s", spsc_fixed, 0, 0, "");
  row("queue_spsc_1k_grow", "items/s", s1k_grow, 0, 0, "");
  row("queue_spsc_1k_fixed", "items/s", s1k_fixed, 0, 0, "");
  row("queue_spsc_100b", "items/s", s100, p("queue_spsc_100b"), 0, "");
  row("queue_spsc_1m", "GB/s", s1m, p("queue_spsc_1m"), mc_cold, "memcpy_64m_cold");
  row("", "", s1m, 0, mc, "memcpy_1m_hot");
  row("queue_mpmc_4x4", "items/s", mpmc, p("queue_mpmc_4x4"), 0, "");
  row("queue_mpmc_4x4_fixed", "items/s", mpmc_fixed, 0, 0, "");
  row("queue_memory_idle", "KiB/q", mem_idle, 0, 0, "");
  row("queue_memory_used", "KiB/q", mem_used, 0, 0, "");
  row("queue_memory_commit", "KiB/q", mem_commit, 0, 0, "");
  row("queue_memory_held", "KiB", mem_held, 0, 0, "");
  const std::vector<Record> records{
      {"queue_spsc_int64", "items/s", spsc, {{"python", p("queue_spsc_int64")}, {"bare_ring", ring}}, true, ""},
      {"queue_spsc_1k", "items/s", s1k, {{"python", p("queue_spsc_1k")}}, true, ""},
      {"queue_spsc_int64_grow", "items/s", spsc_grow, {}, true, "QueueOptions::grow_cells = true"},
      {"queue_spsc_int64_fixed", "items/s", spsc_fixed, {}, true, "QueueOptions::grow_cells = false"},
      {"queue_spsc_1k_grow", "items/s", s1k_grow, {}, true, "QueueOptions::grow_cells = true"},
      {"queue_spsc_1k_fixed", "items/s", s1k_fixed, {}, true, "QueueOptions::grow_cells = false"},
      {"queue_spsc_100b", "items/s", s100, {{"python", p("queue_spsc_100b")}}, true, ""},
      {"queue_spsc_1m", "GB/s", s1m, {{"python", p("queue_spsc_1m")}, {"memcpy_64m_cold", mc_cold}}, true, ""},
      {"queue_mpmc_4x4", "items/s", mpmc, {{"python", p("queue_mpmc_4x4")}}, true, ""},
      {"queue_mpmc_4x4_fixed", "items/s", mpmc_fixed, {}, true, "QueueOptions::grow_cells = false"},
      {"queue_memory_idle_resident", "KiB/queue", mem_idle, {}, false, "1000 idle queues"},
      {"queue_memory_used_resident", "KiB/queue", mem_used, {}, false, "1000 queues after 300 items of 100 B each"},
      {"queue_memory_committed", "KiB/queue", mem_commit, {}, false, "1000 queues, Committed_AS"},
      {"queue_memory_held_resident", "KiB", mem_held, {}, false, "one queue holding 1000 items of 100 B"},
  };
  if (!write_json(opt.json_path, "queue_bench", records)) return 1;
  std::printf("limits: bare_ring %.4g msg/s, memcpy 1 MiB blocks: %.3g GB/s in cache, %.3g GB/s through 64 MiB\n",
              ring, mc, mc_cold);
  return 0;
}
