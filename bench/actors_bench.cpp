// actors_bench: mpx::actors against CAF's own middleman (TCP on 127.0.0.1),
// plain CAF in one process and Python's multiprocessing, in the same run.
//
//   actors_bench [--quick] [--no-python] [--repeat N] [--json FILE] [--pin]
//
// Scenarios (best of N runs, default 3, for every contender and latency figure):
//   actor_request_roundtrip    request/response, requester (plain code) in this
//                              process, actor in another process; median and
//                              p99 in microseconds.
//                              mpx: an mpx::actors::Host child.
//                              CAF: an actor published by caf::io::middleman in
//                              a forked child on 127.0.0.1 (port 0, the port
//                              comes back through a pipe), remote_actor() here,
//                              scoped_actor::request.
//                              Python: multiprocessing.Pipe ping-pong
//                              (bench/python/actors_bench.py).
//                              Ratios CAF/mpx, Python/mpx (> 1: mpx faster).
//   actor_oneway_throughput    small messages to an actor in another process,
//                              messages per second; the actor counts them and a
//                              final request returns the count, so the time
//                              covers handling. 200,000 messages a round (the
//                              mailbox holds 65,536: the sender is held back
//                              by the host, a sustained rate), the median of
//                              at least 5 rounds, after a warm-up of 600,000
//                              messages: one lap of the host's 64 MiB log, whose
//                              pages are touched (faulted in, in both
//                              processes) only as a stream first passes them,
//                              a one-time cost per host that made the first
//                              rounds up to 2x slower. Peers: the CAF middleman,
//                              Python multiprocessing.Queue. Ratios mpx/peer
//                              (> 1: mpx faster).
//   actor_inprocess_roundtrip  both sides in this process: mpx::actors::spawn
//                              and request<int>().get() from plain code, against
//                              plain CAF (one actor_system, scoped_actor
//                              request). Ratio mpx/CAF: mpx's overhead on the
//                              CAF it runs on (> 1: mpx slower).
//
// Nothing is pinned by default: every contender runs several threads per
// process (gateway, CAF workers, middleman multiplexer), and pinning a whole
// process to one CPU serializes them (it cost the CAF middleman 2x and Python
// 2x under a concurrent build here, mpx less). --pin pins the cross-process
// scenarios as pipe_bench does: this process to CPU 0, the other process to
// CPU 1 (every thread of it: the affinity is set before the fork), Python's
// too; the in-process scenario always runs unpinned. Every
// CAF system (the mpx host's, the middleman peer's, plain CAF's) has 2
// scheduler threads and the sharing policy, as mpx's endpoints do (hosts get
// HostOptions::threads = 2). CAF requests have no timeout (a timeout costs CAF
// a timer-thread round per request), mpx ones get(60 s).
// --json FILE writes one record per scenario: name, unit, better, mpx, peers,
// ratios (the headline figure, the median for latencies) and, for latencies,
// p99 / p99_ratios.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "bench_support.hpp"
#include "mpx/actors.hpp"

using namespace mpx::bench;
namespace ma = mpx::actors;

namespace {

// ---- the actor under test: the same three handlers in mpx and in CAF

struct Add {
  int a = 0, b = 0;
  template <class A>
  void serialize(A& ar) {
    ar(a, b);
  }
};
struct Record {
  int value = 0;
  template <class A>
  void serialize(A& ar) {
    ar(value);
  }
};
struct Total {
  template <class A>
  void serialize(A&) {}
};

struct Hang {  // a request that is never answered: the host is killed under it
  template <class A>
  void serialize(A&) {}
};

// Add -> a + b; Record -> counted, no reply; Total -> the count (then reset).
class BenchActor : public ma::Actor {
 public:
  explicit BenchActor(ma::Context& self) : Actor(self) {}
  ma::Behavior behavior() override {
    return {
        [](const Add& m) { return m.a + m.b; },
        [this](const Record&) { ++count_; },
        [this](const Total&) { return std::exchange(count_, std::int64_t{0}); },
        [](const Hang&) {
          std::this_thread::sleep_for(std::chrono::seconds(60));
          return 0;
        },
    };
  }

 private:
  std::int64_t count_ = 0;
};
MPX_REGISTER_ACTOR_CLASS(BenchActor);

using total_atom = caf::atom_constant<caf::atom("total")>;

// (a, b) -> a + b; (int) -> counted; total -> the count (then reset).
// Spawned with an argument: CAF 0.17 derefs a null tuple for a function
// actor spawned without one.
caf::behavior caf_bench_actor(caf::event_based_actor* self, std::int64_t start) {
  self->set_default_handler(caf::drop);
  auto count = std::make_shared<std::int64_t>(start);
  return {
      [](int a, int b) { return a + b; },
      [count](int) { ++*count; },
      [count](total_atom) { return std::exchange(*count, std::int64_t{0}); },
  };
}

constexpr auto kTimeout = std::chrono::seconds(60);

// ---- statistics

struct Latency {
  double median_us = 0;
  double p99_us = 0;
};
// Drops the first 10% (warm-up), then median and p99 in microseconds.
Latency summarize(std::vector<double> samples) {
  samples.erase(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(samples.size() / 10));
  std::sort(samples.begin(), samples.end());
  const std::size_t n = samples.size();
  return {samples[n / 2] * 1e6, samples[std::min(n - 1, n * 99 / 100)] * 1e6};
}
double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}
void keep_best(std::optional<Latency>& best, const Latency& l) {
  if (!best) {
    best = l;
    return;
  }
  best->median_us = std::min(best->median_us, l.median_us);
  best->p99_us = std::min(best->p99_us, l.p99_us);
}

// ---- mpx

Latency mpx_roundtrip(const ma::ActorRef& actor, int n) {
  std::vector<double> samples;
  samples.reserve(n);
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    int r = actor.request<int>(Add{i, 1}).get(kTimeout);
    samples.push_back(seconds_since(t0));
    if (r != i + 1) throw std::runtime_error("mpx: wrong reply");
  }
  return summarize(std::move(samples));
}

double mpx_oneway(const ma::ActorRef& actor, int n) {
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) actor.send(Record{i});
  auto count = actor.request<std::int64_t>(Total{}).get(kTimeout);
  double dt = seconds_since(t0);
  if (count != n) throw std::runtime_error("mpx: the actor counted " + std::to_string(count) + " of " + std::to_string(n));
  return n / dt;
}

// ---- CAF

Latency caf_roundtrip(caf::actor_system& system, const caf::actor& actor, int n) {
  caf::scoped_actor self{system};
  std::vector<double> samples;
  samples.reserve(n);
  std::string failure;
  for (int i = 0; i < n && failure.empty(); ++i) {
    int r = -1;
    auto t0 = Clock::now();
    self->request(actor, caf::infinite, i, 1)
        .receive([&](int value) { r = value; }, [&](caf::error& e) { failure = system.render(e); });
    samples.push_back(seconds_since(t0));
    if (failure.empty() && r != i + 1) failure = "wrong reply";
  }
  if (!failure.empty()) throw std::runtime_error("CAF request: " + failure);
  return summarize(std::move(samples));
}

double caf_oneway(caf::actor_system& system, const caf::actor& actor, int n) {
  caf::scoped_actor self{system};
  std::int64_t count = -1;
  std::string failure;
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) self->send(actor, i);
  self->request(actor, caf::infinite, total_atom::value)
      .receive([&](std::int64_t c) { count = c; }, [&](caf::error& e) { failure = system.render(e); });
  double dt = seconds_since(t0);
  if (!failure.empty()) throw std::runtime_error("CAF request: " + failure);
  if (count != n) throw std::runtime_error("CAF: the actor counted " + std::to_string(count) + " of " + std::to_string(n));
  return n / dt;
}

// Every CAF system here runs the scheduler mpx's endpoints run
// (actors/src/runtime.cpp, Endpoint::system()): 2 threads, the sharing policy
// (workers wait on a condition variable; CAF's default work-stealing workers
// poll with sleeps once idle). The peers then differ from mpx in transport
// and layer, not in scheduler.
void configure_caf(caf::actor_system_config& cfg) {
  cfg.set("scheduler.max-threads", 2);
  cfg.set("scheduler.policy", caf::atom("sharing"));
}

// The CAF middleman peer: a forked child (CPU 1 when pinning) publishing
// caf_bench_actor on 127.0.0.1 at a port the OS picks, which it writes into a
// pipe. It serves until SIGTERM (stop()), or until this process dies
// (PR_SET_PDEATHSIG).
class CafServer {
 public:
  explicit CafServer(bool pin) {
    int port_pipe[2];
    if (::pipe2(port_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      if (pin) pin_to(1);
      ::close(port_pipe[0]);
      ::_exit(serve(port_pipe[1]));  // _exit: no atexit handler of the parent runs here
    }
    ::close(port_pipe[1]);
    std::int32_t port = -1;
    ssize_t got;
    do {
      got = ::read(port_pipe[0], &port, sizeof port);
    } while (got < 0 && errno == EINTR);
    ::close(port_pipe[0]);
    if (got != sizeof port || port <= 0) {
      stop();
      throw std::runtime_error("the CAF middleman child did not publish its actor");
    }
    port_ = static_cast<std::uint16_t>(port);
  }
  CafServer(const CafServer&) = delete;
  CafServer& operator=(const CafServer&) = delete;
  ~CafServer() { stop(); }

  [[nodiscard]] std::uint16_t port() const { return port_; }

  // SIGTERM, up to 5 s for a clean exit, then SIGKILL; reaps the child.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    auto deadline = Clock::now() + std::chrono::seconds(5);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        std::fprintf(stderr, "warning: the CAF middleman child did not stop; killing it\n");
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
  }

 private:
  static int serve(int port_fd) {
    // SIGTERM blocked before CAF starts its threads, so that every thread
    // inherits the mask and sigwait below takes it.
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &term, nullptr);
    int rc = 0;
    {
      caf::actor_system_config cfg;
      cfg.load<caf::io::middleman>();
      configure_caf(cfg);
      caf::actor_system system{cfg};
      auto actor = system.spawn(caf_bench_actor, std::int64_t{0});
      auto port = system.middleman().publish(actor, 0, "127.0.0.1");  // loopback only
      std::int32_t value = port ? *port : -1;
      if (::write(port_fd, &value, sizeof value) != sizeof value) rc = 1;
      ::close(port_fd);
      if (!port) {
        std::fprintf(stderr, "CAF publish failed: %s\n", system.render(port.error()).c_str());
        rc = 1;
      } else {
        int sig = 0;
        ::sigwait(&term, &sig);
      }
      caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    }
    return rc;
  }

  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

// ---- output

struct Peer {
  std::string key;    // JSON name: caf_middleman, caf, python_pipe, python_queue
  std::string label;  // table column
  std::optional<double> value;
  std::optional<double> p99;
};
struct Row {
  std::string name;
  std::string unit;
  bool lower_is_better;
  bool ratio_mpx_over_peer;  // else peer/mpx
  double mpx;
  std::optional<double> mpx_p99;
  std::vector<Peer> peers;
};

double ratio(const Row& r, double mpx, double peer) { return r.ratio_mpx_over_peer ? mpx / peer : peer / mpx; }
std::string ratio_name(const Row& r, const std::string& key) {
  return r.ratio_mpx_over_peer ? "mpx/" + key : key + "/mpx";
}

// The row as the common record: medians as the figures, p99s as extras.
mpx::bench::Record to_record(const Row& r, bool pinned) {
  mpx::bench::Record out{r.name, r.unit, r.mpx, {}, !r.lower_is_better, pinned ? "pinned" : "", {}};
  if (r.mpx_p99) out.extra.emplace_back("mpx_p99", *r.mpx_p99);
  for (const auto& p : r.peers) {
    if (p.value) out.peers.emplace_back(p.key, *p.value);
    if (p.p99) out.extra.emplace_back(p.key + "_p99", *p.p99);
  }
  return out;
}

std::string cell(std::optional<double> v, bool rate) {
  char buf[32];
  if (!v) return "-";
  std::snprintf(buf, sizeof buf, rate ? "%.3g" : "%.1f", *v);
  return buf;
}

void print_table(const std::vector<Row>& rows) {
  std::printf("%-26s %-11s %10s   %-34s %-34s\n", "scenario", "unit", "mpx", "CAF peer (ratio)", "Python peer (ratio)");
  auto line = [](const Row& r, const char* unit, double mine, auto value_of) {
    std::printf("%-26s %-11s %10s", r.name.c_str(), unit, cell(mine, !r.lower_is_better).c_str());
    for (std::size_t i = 0; i < 2; ++i) {
      std::string text = "-";
      if (i < r.peers.size()) {
        auto v = value_of(r.peers[i]);
        if (v) {
          char buf[96];
          std::snprintf(buf, sizeof buf, "%s %s (%.2fx %s)", r.peers[i].label.c_str(),
                        cell(*v, !r.lower_is_better).c_str(), ratio(r, mine, *v),
                        ratio_name(r, r.peers[i].label).c_str());
          text = buf;
        }
      }
      std::printf("   %-34s", text.c_str());
    }
    std::printf("\n");
  };
  for (const auto& r : rows) {
    if (r.mpx_p99) {
      line(r, (r.unit + " med").c_str(), r.mpx, [](const Peer& p) { return p.value; });
      line(r, (r.unit + " p99").c_str(), *r.mpx_p99, [](const Peer& p) { return p.p99; });
    } else {
      line(r, r.unit.c_str(), r.mpx, [](const Peer& p) { return p.value; });
    }
  }
  std::printf(
      "CAF peer: caf::io::middleman over TCP on 127.0.0.1 (cross-process rows), plain CAF in one actor_system "
      "(in-process row).\n"
      "Ratios > 1 mean mpx is faster, except mpx/CAF on the in-process row: mpx's overhead over the CAF it runs on.\n");
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_options(argc, argv);
  bool pin = false;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--pin") pin = true;
  const int n_rtt = opt.quick ? 2000 : 10000;
  const int n_one = opt.quick ? 50000 : 200000;
  const int n_local = opt.quick ? 5000 : 20000;

  std::vector<Row> rows;
  try {
    // Children first, while this process has no thread: the CAF middleman
    // child, then the mpx host (with --pin made while this process is on
    // CPU 1, so that every thread of the host inherits CPU 1).
    CafServer caf_server(pin);
    if (pin) pin_to(1);
    ma::Host host("actors-bench", ma::HostOptions().with_threads(2));
    if (pin) pin_to(0);
    ma::ActorRef remote = host.spawn("BenchActor", "bench");

    std::optional<Latency> mpx_rtt, caf_rtt, mpx_local, caf_local;
    double mpx_one = 0, caf_one = 0;
    {
      caf::actor_system_config cfg;
      cfg.load<caf::io::middleman>();
      configure_caf(cfg);
      caf::actor_system system{cfg};
      auto caf_remote = system.middleman().remote_actor("127.0.0.1", caf_server.port());
      if (!caf_remote) throw std::runtime_error("CAF remote_actor: " + system.render(caf_remote.error()));
      // Warm-up of both paths, then the contenders take turns run by run.
      (void)mpx_roundtrip(remote, 200);
      (void)caf_roundtrip(system, *caf_remote, 200);
      (void)mpx_oneway(remote, opt.quick ? n_one / 10 : 600000);  // a lap of the log: see the top
      (void)caf_oneway(system, *caf_remote, n_one / 10);
      for (int r = 0; r < opt.repeat; ++r) {
        keep_best(mpx_rtt, mpx_roundtrip(remote, n_rtt));
        keep_best(caf_rtt, caf_roundtrip(system, *caf_remote, n_rtt));
      }
      // Throughput is the median of the rounds, not the best: a first round
      // once ran 3x faster than the sustained rate (a gateway that woke its
      // producers per message only once the mailbox was full).
      std::vector<double> mpx_rounds, caf_rounds;
      for (int r = 0; r < std::max(opt.repeat, 5); ++r) {
        mpx_rounds.push_back(mpx_oneway(remote, n_one));
        caf_rounds.push_back(caf_oneway(system, *caf_remote, n_one));
      }
      mpx_one = median_of(mpx_rounds);
      caf_one = median_of(caf_rounds);
    }  // the CAF client system: disconnects before the server stops
    caf_server.stop();
    host.shutdown();

    if (pin) unpin();
    {
      ma::ActorRef local = ma::spawn("BenchActor", "bench-local");
      caf::actor_system_config cfg;
      configure_caf(cfg);
      caf::actor_system system{cfg};
      auto caf_actor = system.spawn(caf_bench_actor, std::int64_t{0});
      (void)mpx_roundtrip(local, 500);
      (void)caf_roundtrip(system, caf_actor, 500);
      for (int r = 0; r < opt.repeat; ++r) {
        keep_best(mpx_local, mpx_roundtrip(local, n_local));
        keep_best(caf_local, caf_roundtrip(system, caf_actor, n_local));
      }
      caf::anon_send_exit(caf_actor, caf::exit_reason::user_shutdown);
      local.send(ma::PoisonPill{});
    }

    // Failure detection: a request in hand when its host is SIGKILLed; time
    // from the kill to the ActorDown the requester gets (target <= 100 ms).
    std::vector<double> detection_ms;
    for (int k = 0; k < (opt.quick ? 3 : 10); ++k) {
      ma::Host victim("actors-bench-down-" + std::to_string(k));
      auto actor = victim.spawn("BenchActor", "bench");
      (void)actor.request<int>(Add{1, 1}).get(kTimeout);
      auto pending = actor.request<int>(Hang{});
      (void)pending.wait(std::chrono::milliseconds(20));  // in the handler by now
      auto killed = Clock::now();
      victim.kill();
      try {
        (void)pending.get(kTimeout);
      } catch (const ma::ActorDown&) {
      }
      detection_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - killed).count());
    }
    std::sort(detection_ms.begin(), detection_ms.end());

    std::map<std::string, double> py;
    if (opt.python) py = run_python("actors_bench.py", python_args(opt) + (pin ? " --pin" : ""));
    auto py_value = [&](const char* key) -> std::optional<double> {
      auto it = py.find(key);
      if (it == py.end()) return std::nullopt;
      return it->second;
    };

    rows.push_back(Row{"actor_request_roundtrip", "us", true, false, mpx_rtt->median_us, mpx_rtt->p99_us,
                       {Peer{"caf_middleman", "CAF", caf_rtt->median_us, caf_rtt->p99_us},
                        Peer{"python_pipe", "Python", py_value("actor_request_roundtrip_us"),
                             py_value("actor_request_roundtrip_p99_us")}}});
    rows.push_back(Row{"actor_oneway_throughput", "msg/s", false, true, mpx_one, std::nullopt,
                       {Peer{"caf_middleman", "CAF", caf_one, std::nullopt},
                        Peer{"python_queue", "Python", py_value("actor_oneway_throughput"), std::nullopt}}});
    rows.push_back(Row{"actor_inprocess_roundtrip", "us", true, true, mpx_local->median_us, mpx_local->p99_us,
                       {Peer{"caf", "CAF", caf_local->median_us, caf_local->p99_us}}});
    rows.push_back(Row{"actor_down_detection", "ms", true, true, detection_ms[detection_ms.size() / 2],
                       detection_ms.back(), {}});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "actors_bench: %s\n", e.what());
    return 1;
  }

  print_table(rows);
  std::vector<mpx::bench::Record> records;
  for (const auto& r : rows) records.push_back(to_record(r, pin));
  if (!mpx::bench::write_json(opt.json_path, "actors_bench", records)) return 1;
  return 0;
}
