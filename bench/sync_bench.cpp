// sync_bench: mpx's cross-process synchronisation side by side with Python's
// multiprocessing (bench/python/sync_bench.py, run by this program) and with
// the machine's bare limits, in one run.
// Usage: sync_bench [--scale S] [--pin none|cross|same] [--json FILE]
//
//   value_lock_increment_2proc   2 processes x N increments of a Value<long>
//                                under get_lock(); bare: atomic fetch_add.
//                                ratio mpx/python, target >= 20.
//   event_pingpong_roundtrip     two Events, parent <-> child, round trip;
//                                bare: futex wait/wake round trip.
//                                ratio mpx/bare, target <= 1.5.
//   lock_handoff_roundtrip       two Locks, each acquired on one side and
//                                released on the other (as Python allows).
//                                ratio mpx/bare, target <= 1.5.
//   lock_uncontended             acquire+release, one process; bare: a
//                                pthread mutex.
#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "mpx/detail/futex.hpp"
#include "mpx/detail/shared_mapping.hpp"
#include "mpx/event.hpp"
#include "mpx/lock.hpp"
#include "mpx/sharedctypes.hpp"
#include "shm_sync_bench_support.hpp"

using namespace mpx::bench;

namespace {

double value_increments(long n) {
  mpx::Value<long> v(0);
  mpx::Event go;
  auto body = [&] {
    go.wait();
    for (long i = 0; i < n; ++i) {
      std::lock_guard g(v.get_lock());
      ++v.get_obj();
    }
  };
  pid_t a = spawn(body), b = spawn(body);
  ::usleep(50000);
  auto t0 = Clock::now();
  go.set();
  join(a);
  join(b);
  double dt = seconds(Clock::now() - t0);
  if (v.value() != 2 * n) std::abort();
  return 2.0 * static_cast<double>(n) / dt;
}

double bare_increments(long n) {
  auto map = mpx::detail::SharedMapping::anonymous(4096);
  auto* counter = new (map.data()) std::atomic<long>(0);
  auto* go = new (static_cast<char*>(map.data()) + 64) std::atomic<int>(0);
  auto body = [&] {
    while (!go->load()) {
    }
    for (long i = 0; i < n; ++i) counter->fetch_add(1);
  };
  pid_t a = spawn(body), b = spawn(body);
  ::usleep(50000);
  auto t0 = Clock::now();
  go->store(1);
  join(a);
  join(b);
  return 2.0 * static_cast<double>(n) / seconds(Clock::now() - t0);
}

double event_roundtrip_us(long n) {
  mpx::Event ping, pong;
  pid_t child = spawn([&] {
    for (long i = 0; i < n; ++i) {
      ping.wait();
      ping.clear();
      pong.set();
    }
  });
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    ping.set();
    pong.wait();
    pong.clear();
  }
  double dt = seconds(Clock::now() - t0);
  join(child);
  return dt / static_cast<double>(n) * 1e6;
}

double lock_handoff_us(long n) {
  mpx::Lock ping, pong;
  ping.acquire();
  pong.acquire();
  pid_t child = spawn([&] {
    for (long i = 0; i < n; ++i) {
      ping.acquire();  // until the parent releases it
      pong.release();  // the parent's turn
    }
  });
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    ping.release();
    pong.acquire();
  }
  double dt = seconds(Clock::now() - t0);
  join(child);
  return dt / static_cast<double>(n) * 1e6;
}

// The bare limit: one futex word each way, wait/wake, nothing else.
double futex_roundtrip_us(long n) {
  auto map = mpx::detail::SharedMapping::anonymous(4096);
  auto* ping = new (map.data()) std::atomic<std::uint32_t>(0);
  auto* pong = new (static_cast<char*>(map.data()) + 64) std::atomic<std::uint32_t>(0);
  pid_t child = spawn([&] {
    for (long i = 0; i < n; ++i) {
      while (ping->load(std::memory_order_acquire) == 0) mpx::detail::futex_wait(*ping, 0);
      ping->store(0, std::memory_order_relaxed);
      pong->store(1, std::memory_order_release);
      mpx::detail::futex_wake(*pong, 1);
    }
  });
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    ping->store(1, std::memory_order_release);
    mpx::detail::futex_wake(*ping, 1);
    while (pong->load(std::memory_order_acquire) == 0) mpx::detail::futex_wait(*pong, 0);
    pong->store(0, std::memory_order_relaxed);
  }
  double dt = seconds(Clock::now() - t0);
  join(child);
  return dt / static_cast<double>(n) * 1e6;
}

double lock_uncontended_ns(long n) {
  mpx::Lock lock;
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    lock.acquire();
    lock.release();
  }
  return seconds(Clock::now() - t0) / static_cast<double>(n) * 1e9;
}

double pthread_uncontended_ns(long n) {
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    pthread_mutex_lock(&m);
    asm volatile("" ::: "memory");
    pthread_mutex_unlock(&m);
  }
  return seconds(Clock::now() - t0) / static_cast<double>(n) * 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  double scale = 1.0;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--scale") == 0) scale = std::atof(argv[i + 1]);
  auto n = [&](double base) { return static_cast<long>(base * scale) + 1; };
  constexpr int kRuns = 5;
  std::string pin = setup_pinning(argc, argv);

  std::printf("sync_bench: running the Python side (bench/python/sync_bench.py)...\n");
  std::fflush(stdout);
  auto py = run_python("sync_bench.py", "--scale " + std::to_string(scale) + " --pin " + pin);

  // How a row's ratio is formed, so that it reads against the row's target.
  enum class Ratio { mpx_per_python, mpx_per_bare, python_per_mpx };
  std::vector<Row> rows;
  // The Python value is the script's line named like the scenario.
  auto add = [&](const char* scenario, const char* unit, double mpx, double bare, Ratio ratio, const char* target) {
    Row r;
    r.scenario = scenario;
    r.unit = unit;
    r.mpx = mpx;
    r.bare = bare;
    r.python = lookup(py, scenario);
    switch (ratio) {
      case Ratio::mpx_per_python:
        r.ratio_label = "mpx/python";
        r.ratio = r.python ? mpx / *r.python : 0;
        break;
      case Ratio::mpx_per_bare:
        r.ratio_label = "mpx/bare";
        r.ratio = mpx / bare;
        break;
      case Ratio::python_per_mpx:
        r.ratio_label = "python/mpx";
        r.ratio = r.python ? *r.python / mpx : 0;
        break;
    }
    r.target = target;
    rows.push_back(r);
  };
  // Measured one after the other in this order (not inside one call's
  // arguments, whose order of evaluation C++ leaves open).
  double value_mpx = median_of(kRuns, [&] { return value_increments(n(2e6)); });
  double value_bare = median_of(kRuns, [&] { return bare_increments(n(2e6)); });
  add("value_lock_increment_2proc", "ops/s", value_mpx, value_bare, Ratio::mpx_per_python, ">= 20");
  double futex_rt = median_of(kRuns, [&] { return futex_roundtrip_us(n(20000)); });
  double event_rt = median_of(kRuns, [&] { return event_roundtrip_us(n(20000)); });
  add("event_pingpong_roundtrip", "us", event_rt, futex_rt, Ratio::mpx_per_bare, "<= 1.5");
  double lock_rt = median_of(kRuns, [&] { return lock_handoff_us(n(20000)); });
  add("lock_handoff_roundtrip", "us", lock_rt, futex_rt, Ratio::mpx_per_bare, "<= 1.5");
  double lock_ns = median_of(kRuns, [&] { return lock_uncontended_ns(n(5e6)); });
  double pthread_ns = median_of(kRuns, [&] { return pthread_uncontended_ns(n(5e6)); });
  add("lock_uncontended_acquire_release", "ns", lock_ns, pthread_ns, Ratio::python_per_mpx, "(info)");
  std::printf("placement: %s\n", pin == "none" ? "left to the scheduler" : pin == "cross" ? "parent on CPU 0, child on CPU 1" : "parent and child on CPU 0");
  print_table(rows);
  std::printf("\nbare: value = atomic fetch_add by 2 processes; round trips = one futex word each way, "
              "FUTEX_WAIT/FUTEX_WAKE, no spinning; uncontended = process-private pthread mutex.\n");
  return write_json(parse_options(argc, argv).json_path, "sync_bench", records_of(rows)) ? 0 : 1;
}
