// nodes_bench: mpx::actors::Node against raw CAF middleman actors, over
// 127.0.0.1, in the same run.
//
//   nodes_bench [--quick] [--repeat N] [--json FILE]
//
// Scenarios (best of N runs, default 3):
//   node_request_roundtrip  request/response from plain code in this process
//                           to an actor in another node's process (a forked
//                           child with its own Node); median and p99 in us.
//                           Peer: a CAF actor published by the middleman in a
//                           forked child, scoped_actor::request from here.
//                           Ratio raw CAF / mpx (> 1: mpx faster).
//   node_oneway_throughput  small messages to that actor, messages per second
//                           (a final request returns the count, so the time
//                           covers handling). Ratio mpx / raw CAF.
//   node_failure_detection  a request in hand when the other node is
//                           SIGKILLed: ms from the kill to the NodeDown (a
//                           connection reset). A cut link is detected after
//                           the heartbeat timeout instead (1.5 s by default;
//                           tests/actors/node_test.cpp measures it).
// Both sides' CAF systems have 2 scheduler threads and the sharing policy.
// Not measured here (yet): TLS and veth between namespaces.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "bench_support.hpp"
#include "mpx/actors.hpp"

namespace ma = mpx::actors;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Ping {
  int n = 0;
  template <class A>
  void serialize(A& ar) {
    ar(n);
  }
};
struct Count {
  template <class A>
  void serialize(A&) {}
};
struct Hang {
  template <class A>
  void serialize(A&) {}
};

ma::Behavior bench_echo(ma::Context& self) {
  auto count = std::make_shared<long>(0);
  auto hung = std::make_shared<std::vector<ma::ResponsePromise<int>>>();
  return {
      [count](const Ping& p) {
        ++*count;
        return p.n + 1;
      },
      [count](const Count&) { return static_cast<int>(*count); },
      [&self, hung](const Hang&) {
        hung->push_back(self.make_response_promise<int>());
        return hung->back();
      },
  };
}
MPX_REGISTER_ACTOR(bench_echo);

namespace {

constexpr const char* kSecret = "nodes-bench";
using count_atom = caf::atom_constant<caf::atom("count")>;

void configure_caf(caf::actor_system_config& cfg) {
  cfg.set("scheduler.max-threads", 2);
  cfg.set("scheduler.policy", caf::atom("sharing"));
}

caf::behavior caf_echo(caf::event_based_actor* self) {
  auto count = std::make_shared<long>(0);
  self->set_default_handler(caf::drop);
  return {[count](int n) {
            ++*count;
            return n + 1;
          },
          [count](count_atom) { return static_cast<int>(*count); }};
}

// A forked child that serves until SIGKILLed; it writes its port to a pipe.
class Server {
 public:
  template <class F>
  explicit Server(F serve) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(fds[0]);
      serve(fds[1]);
      ::_exit(2);
    }
    ::close(fds[1]);
    if (::read(fds[0], &port_, sizeof port_) != sizeof port_) port_ = 0;
    ::close(fds[0]);
    if (port_ == 0) throw std::runtime_error("a bench server did not start");
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server() { kill(); }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  [[nodiscard]] std::uint16_t port() const { return port_; }

 private:
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

void serve_mpx(int fd, const std::string& name) {
  ma::Node node(ma::NodeOptions{}.with_name(name).with_secret(kSecret));
  ma::spawn("bench_echo", "echo");
  const std::uint16_t port = node.port();
  if (::write(fd, &port, sizeof port) != sizeof port) return;
  ::pause();
}

void serve_caf(int fd) {
  caf::actor_system_config cfg;
  cfg.load<caf::io::middleman>();
  configure_caf(cfg);
  caf::actor_system system{cfg};
  auto echo = system.spawn(caf_echo);
  auto port = system.middleman().publish(echo, 0, "127.0.0.1");
  if (!port) return;
  const std::uint16_t p = *port;
  if (::write(fd, &p, sizeof p) != sizeof p) return;
  ::pause();
}

struct Latency {
  double median_us = 0, p99_us = 0;
};

template <class F>
Latency measure(int n, F once) {
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    once(i);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return {mpx::bench::median(us), mpx::bench::p99(us)};
}

void keep_best(std::optional<Latency>& best, Latency l) {
  if (!best || l.median_us < best->median_us) best = l;
}

}  // namespace

int main(int argc, char** argv) {
  const auto opt = mpx::bench::parse_options(argc, argv);
  const int n_rtt = opt.quick ? 2000 : 10000;
  const int n_one = opt.quick ? 20000 : 100000;
  std::vector<mpx::bench::Record> records;
  try {
    // Servers first, while this process has no thread.
    Server mpx_server([](int fd) { serve_mpx(fd, "bench-server"); });
    Server caf_server([](int fd) { serve_caf(fd); });
    std::vector<std::unique_ptr<Server>> victims;
    const int n_kill = opt.quick ? 3 : 10;
    for (int k = 0; k < n_kill; ++k)
      victims.push_back(std::make_unique<Server>([k](int fd) { serve_mpx(fd, "bench-victim-" + std::to_string(k)); }));

    std::optional<Latency> mpx_rtt, caf_rtt;
    double mpx_one = 0, caf_one = 0;
    std::vector<double> detection_ms;
    {
      ma::Node node(ma::NodeOptions{}.with_name("bench-client").with_secret(kSecret));
      const std::string peer = node.connect("127.0.0.1", mpx_server.port(), 10s);
      ma::ActorRef echo = node.actor(peer, "echo");

      caf::actor_system_config cfg;
      cfg.load<caf::io::middleman>();
      configure_caf(cfg);
      caf::actor_system system{cfg};
      auto caf_remote = system.middleman().remote_actor("127.0.0.1", caf_server.port());
      if (!caf_remote) throw std::runtime_error("CAF remote_actor: " + system.render(caf_remote.error()));
      caf::scoped_actor self{system};

      auto mpx_once = [&](int i) {
        if (echo.request<int>(Ping{i}).get(60s) != i + 1) throw std::runtime_error("mpx: wrong reply");
      };
      auto caf_once = [&](int i) {
        self->request(*caf_remote, caf::infinite, i).receive(
            [&](int r) {
              if (r != i + 1) throw std::runtime_error("CAF: wrong reply");
            },
            [&](caf::error& e) { throw std::runtime_error("CAF: " + system.render(e)); });
      };
      auto mpx_oneway = [&](int n) {
        const int before = echo.request<int>(Count{}).get(60s);
        const auto t0 = Clock::now();
        for (int i = 0; i < n; ++i) echo.send(Ping{i});
        if (echo.request<int>(Count{}).get(60s) != before + n) throw std::runtime_error("mpx: messages lost");
        return n / mpx::bench::seconds_since(t0);
      };
      auto caf_oneway = [&](int n) {
        int before = 0, after = 0;
        self->request(*caf_remote, caf::infinite, count_atom::value).receive([&](int c) { before = c; },
                                                                              [](caf::error&) {});
        const auto t0 = Clock::now();
        for (int i = 0; i < n; ++i) self->send(*caf_remote, i);
        self->request(*caf_remote, caf::infinite, count_atom::value).receive([&](int c) { after = c; },
                                                                              [](caf::error&) {});
        if (after != before + n) throw std::runtime_error("CAF: messages lost");
        // The replies to the one-way ints land in our mailbox: drop them.
        self->receive_while([&] { return self->mailbox().size() > 0; })([](int) {});
        return n / mpx::bench::seconds_since(t0);
      };

      (void)measure(200, mpx_once);
      (void)measure(200, caf_once);
      for (int r = 0; r < opt.repeat; ++r) {
        keep_best(mpx_rtt, measure(n_rtt, mpx_once));
        keep_best(caf_rtt, measure(n_rtt, caf_once));
      }
      (void)mpx_oneway(n_one / 10);
      (void)caf_oneway(n_one / 10);
      for (int r = 0; r < opt.repeat; ++r) {
        mpx_one = std::max(mpx_one, mpx_oneway(n_one));
        caf_one = std::max(caf_one, caf_oneway(n_one));
      }

      for (auto& victim : victims) {
        const std::string v = node.connect("127.0.0.1", victim->port(), 10s);
        auto pending = node.actor(v, "echo").request<int>(Hang{});
        (void)pending.wait(20ms);
        const auto killed = Clock::now();
        victim->kill();
        try {
          (void)pending.get(10s);
        } catch (const ma::NodeDown&) {
        }
        detection_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - killed).count());
      }
      std::sort(detection_ms.begin(), detection_ms.end());
    }
    std::printf("%-26s %12s %12s %8s\n", "scenario", "mpx", "raw CAF", "ratio");
    std::printf("%-26s %10.1f us %10.1f us %8.2f  (median; p99 %.1f / %.1f us)\n", "node_request_roundtrip",
                mpx_rtt->median_us, caf_rtt->median_us, caf_rtt->median_us / mpx_rtt->median_us, mpx_rtt->p99_us,
                caf_rtt->p99_us);
    std::printf("%-26s %8.0f msg/s %8.0f msg/s %8.2f\n", "node_oneway_throughput", mpx_one, caf_one, mpx_one / caf_one);
    std::printf("%-26s %10.1f ms %12s %8s  (median of %zu; max %.1f ms)\n", "node_failure_detection",
                detection_ms[detection_ms.size() / 2], "-", "-", detection_ms.size(), detection_ms.back());

    records.emplace_back("node_request_roundtrip", "us", mpx_rtt->median_us,
                         mpx::bench::Record::Figures{{"caf_middleman", caf_rtt->median_us}}, false, "median",
                         mpx::bench::Record::Figures{{"mpx_p99", mpx_rtt->p99_us}, {"caf_p99", caf_rtt->p99_us}});
    records.emplace_back("node_oneway_throughput", "msg/s", mpx_one,
                         mpx::bench::Record::Figures{{"caf_middleman", caf_one}}, true);
    records.emplace_back("node_failure_detection", "ms", detection_ms[detection_ms.size() / 2],
                         mpx::bench::Record::Figures{}, false, "SIGKILL of the other node, median",
                         mpx::bench::Record::Figures{{"max", detection_ms.back()}});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nodes_bench: %s\n", e.what());
    return 1;
  }
  return mpx::bench::write_json(opt.json_path, "nodes_bench", records) ? 0 : 1;
}
