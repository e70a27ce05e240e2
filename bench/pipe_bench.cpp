// pipe_bench: mpx::Pipe against Python's multiprocessing.Pipe and against a
// bare pipe(2) / socketpair(2) round trip measured in the same run.
//
//   pipe_bench [--quick] [--no-python] [--repeat N] [--json FILE]   (best of N runs, default 3)
//
// Scenarios:
//   pipe_pingpong    median round trip of a small message (int64) between two
//                    processes: send, the peer recv()s and sends it back
//   pipe_oneway      small messages per second, one direction
// Limits: bare_pipe_rtt (8 bytes over two pipe(2)s, blocking read/write),
// bare_seqpacket_rtt (the same over one AF_UNIX SOCK_SEQPACKET socketpair).
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "mpx/pipe.hpp"

using namespace mpx::bench;

namespace {

// The two sides of every scenario run on different cores (parent CPU 0,
// child CPU 1), for mpx, the bare pipes and Python alike.
template <class F>
pid_t spawn(F fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    pin_to(1);
    ::_exit(fn());
  }
  return pid;
}
void reap(pid_t pid) {
  int st;
  ::waitpid(pid, &st, 0);
}

double median_us(std::vector<double>& v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2] * 1e6;
}

bool read_full(int fd, void* p, std::size_t n) { return ::read(fd, p, n) == static_cast<ssize_t>(n); }
bool write_full(int fd, const void* p, std::size_t n) { return ::write(fd, p, n) == static_cast<ssize_t>(n); }

// Round trip over two fds pairs: (to_child_w, to_child_r), (to_parent_w, to_parent_r).
double bare_rtt(int n, bool seqpacket) {
  int a[2], b[2];
  if (seqpacket) {
    ::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, a);
    b[0] = a[1];
    b[1] = a[0];
  } else {
    ::pipe(a);
    ::pipe(b);
  }
  // parent writes a[1]/reads b[0]; child reads a[0]/writes b[1]
  int pw = a[1], pr = seqpacket ? a[1] : b[0], cr = a[0], cw = seqpacket ? a[0] : b[1];
  pid_t child = spawn([&] {
    std::int64_t v;
    for (int i = 0; i < n; ++i) {
      if (!read_full(cr, &v, 8) || !write_full(cw, &v, 8)) return 1;
    }
    return 0;
  });
  std::vector<double> samples;
  samples.reserve(n);
  std::int64_t v = 7;
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    write_full(pw, &v, 8);
    read_full(pr, &v, 8);
    samples.push_back(seconds_since(t0));
  }
  reap(child);
  ::close(a[0]);
  ::close(a[1]);
  if (!seqpacket) {
    ::close(b[0]);
    ::close(b[1]);
  }
  samples.erase(samples.begin(), samples.begin() + n / 10);
  return median_us(samples);
}

double mpx_pingpong(int n) {
  auto [a, b] = mpx::Pipe();
  pid_t child = spawn([&, b = b]() mutable {
    for (int i = 0; i < n; ++i) b.send(b.recv<std::int64_t>());
    return 0;
  });
  std::vector<double> samples;
  samples.reserve(n);
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    a.send(std::int64_t{i});
    (void)a.recv<std::int64_t>();
    samples.push_back(seconds_since(t0));
  }
  reap(child);
  samples.erase(samples.begin(), samples.begin() + n / 10);
  return median_us(samples);
}

double mpx_oneway(int n) {
  auto [a, b] = mpx::Pipe();
  pid_t child = spawn([&, b = b]() mutable {
    for (int i = 0; i < n; ++i) (void)b.recv<std::int64_t>();
    b.send(true);
    return 0;
  });
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) a.send(std::int64_t{i});
  (void)a.recv<bool>();
  double dt = seconds_since(t0);
  reap(child);
  return n / dt;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_options(argc, argv);
  const bool quick = opt.quick;
  const int repeat = opt.repeat;
  const int n_rtt = quick ? 5000 : 20000;
  pin_to(0);
  const int n_one = quick ? 200000 : 1000000;
  // Best of `repeat` runs (lowest round trip, highest rate), for every contender.
  auto lowest = [&](auto f) {
    double b = 1e300;
    for (int i = 0; i < repeat; ++i) b = std::min(b, f());
    return b;
  };
  double pipe_rtt = lowest([&] { return bare_rtt(n_rtt, false); });
  double seq_rtt = lowest([&] { return bare_rtt(n_rtt, true); });
  double pp = lowest([&] { return mpx_pingpong(n_rtt); });
  double one = -lowest([&] { return -mpx_oneway(n_one); });
  unpin();  // Python pins its own processes
  std::map<std::string, double> py;
  if (opt.python) py = run_python("pipe_bench.py", python_args(opt));
  double py_pp = py.count("pipe_pingpong_us") ? py["pipe_pingpong_us"] : 0;
  double py_one = py.count("pipe_oneway") ? py["pipe_oneway"] : 0;
  std::printf("%-16s %-8s %10s %10s %12s %14s %16s\n", "scenario", "unit", "mpx", "python", "python/mpx",
              "bare pipe", "bare seqpacket");
  std::printf("%-16s %-8s %10.2f %10.2f %11.1fx %9.2f (%.2fx) %9.2f (%.2fx)\n", "pipe_pingpong", "us/rtt", pp, py_pp,
              py_pp > 0 ? py_pp / pp : 0, pipe_rtt, pipe_rtt / pp, seq_rtt, seq_rtt / pp);
  std::printf("%-16s %-8s %10.4g %10.4g %11.1fx\n", "pipe_oneway", "msg/s", one, py_one, py_one > 0 ? one / py_one : 0);
  std::printf("(ratios > 1 mean mpx is faster: python/mpx for times, mpx/python for rates, bare/mpx for round trips)\n");
  const std::vector<Record> records{
      {"pipe_pingpong", "us/rtt", pp, {{"python", py_pp}, {"bare_pipe", pipe_rtt}, {"bare_seqpacket", seq_rtt}}, false,
       "int64 ping-pong between two processes, pinned"},
      {"pipe_oneway", "msg/s", one, {{"python", py_one}}, true, "int64 messages, one direction"},
  };
  return write_json(opt.json_path, "pipe_bench", records) ? 0 : 1;
}
