// nodes_bench: mpx::actors::Node against raw CAF middleman actors, in the
// same run, over 127.0.0.1, with TLS, and across network namespaces over veth.
//
//   nodes_bench [--quick] [--repeat N] [--json FILE]
//
// Scenarios:
//   node_request_roundtrip  request/response from plain code in this process
//                           to an actor in another node's process (a forked
//                           child with its own Node); median and p99 in us
//                           over 20 rounds, each a block of mpx's round trips
//                           then a block of CAF's: on 2 vCPUs a round trip's
//                           cost drifts for seconds with where the scheduler
//                           puts the threads, and both must meet the same
//                           drift. Also the median (min, max) of the rounds'
//                           ratios. Peer: a CAF actor published by the
//                           middleman in a forked child,
//                           scoped_actor::request from here.
//                           Ratio raw CAF / mpx (> 1: mpx faster).
//   node_oneway_throughput  small messages to that actor, messages per second
//                           (a final request returns the count, so the time
//                           covers handling), best of N runs (default 3).
//                           Ratio mpx / raw CAF.
//   node_failure_detection  a request in hand when the other node is
//                           SIGKILLed: ms from the kill to the NodeDown (a
//                           connection reset).
//   ..._tls                 the round trip and one-way rows with TLS: mpx
//                           nodes with tls_* options, the peer with CAF's
//                           OpenSSL module (openssl::publish / remote_actor);
//                           one test CA and certificate (EC P-256) made now
//                           in a temporary directory.
//   ..._veth                the round trip and one-way rows between two
//                           network namespaces over veth and a bridge
//                           (tests/support/netns.hpp: addresses 10.200.10.x
//                           inside namespaces made here, deleted at the end).
//   node_failure_detection_cut_link
//                           the link of the other node's namespace is cut
//                           (ip link set <its bridge port> down): ms from
//                           the cut to its monitor firing (node_down). The
//                           heartbeat timeout (1.5 s) bounds it from below.
//                           Raw CAF 0.17 has no heartbeats: no peer figure.
// The veth and cut-link rows need root (network namespaces); otherwise they
// are skipped with a line on stderr and no record. As root, this process
// enters the bench's namespace 0 before it starts any server or node, so the
// 127.0.0.1 and TLS rows run on that namespace's loopback. The namespaces
// and the certificates' directory are removed at the end, also on an error.
// Both sides' CAF systems have 2 scheduler threads and the sharing policy.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "bench_support.hpp"
#include "mpx/actors.hpp"
// The tests' helpers for namespaces and certificates, shared, not copied.
#include "../tests/support/netns.hpp"
#include "../tests/support/test_certificates.hpp"

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
constexpr int kNetSubnet = 10;  // 10.200.10.x, inside the bench's own namespaces
using count_atom = caf::atom_constant<caf::atom("count")>;

void configure_caf(caf::actor_system_config& cfg) {
  cfg.set("scheduler.max-threads", 2);
  cfg.set("scheduler.policy", caf::atom("sharing"));
}

// Certificate, key and CA file for TLS; all empty: plain TCP.
struct Tls {
  std::string certificate, key, cafile;
  [[nodiscard]] bool on() const { return !certificate.empty(); }
};

void configure_caf(caf::actor_system_config& cfg, const Tls& tls) {
  cfg.load<caf::io::middleman>();
  configure_caf(cfg);
  if (!tls.on()) return;
  cfg.load<caf::openssl::manager>();
  cfg.openssl_certificate = tls.certificate;
  cfg.openssl_key = tls.key;
  cfg.openssl_cafile = tls.cafile;
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
      try {  // nothing may unwind into the parent's stack copy
        serve(fds[1]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "nodes_bench server: %s\n", e.what());
      }
      ::_exit(2);
    }
    ::close(fds[1]);
    if (::read(fds[0], &port_, sizeof port_) != sizeof port_) port_ = 0;
    ::close(fds[0]);
    if (port_ == 0) {
      kill();
      throw std::runtime_error("a bench server did not start");
    }
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

ma::NodeOptions node_options(const std::string& name, const std::string& address, const Tls& tls) {
  auto options = ma::NodeOptions{}.with_name(name).with_secret(kSecret).with_address(address);
  if (tls.on()) options.with_tls(tls.certificate, tls.key, tls.cafile);
  return options;
}

// `netns`: the namespace the server enters first ("" : this one).
void serve_mpx(int fd, const ma::NodeOptions& options, const std::string& netns = "") {
  if (!netns.empty()) mpx::test::NetNamespaces::enter(netns);
  ma::Node node(options);
  ma::spawn("bench_echo", "echo");
  const std::uint16_t port = node.port();
  if (::write(fd, &port, sizeof port) != sizeof port) return;
  ::pause();
}

void serve_caf(int fd, const std::string& address, const Tls& tls, const std::string& netns = "") {
  if (!netns.empty()) mpx::test::NetNamespaces::enter(netns);
  caf::actor_system_config cfg;
  configure_caf(cfg, tls);
  caf::actor_system system{cfg};
  auto echo = system.spawn(caf_echo);
  auto port = tls.on() ? caf::openssl::publish(echo, 0, address.c_str())
                       : system.middleman().publish(echo, 0, address.c_str());
  if (!port) throw std::runtime_error("CAF publish: " + system.render(port.error()));
  const std::uint16_t p = *port;
  if (::write(fd, &p, sizeof p) != sizeof p) return;
  ::pause();
}

struct Latency {
  double median_us = 0, p99_us = 0;
};

// Appends the time of n calls of once(i), in us, to `us`.
template <class F>
void time_calls(int n, F once, std::vector<double>& us) {
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    once(i);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
}

struct Sizes {
  int repeat, n_rtt, n_one;
};

// One setting's round trip and one-way figures, mpx and raw CAF.
struct PairResult {
  Latency mpx_rtt, caf_rtt;
  double round_ratio = 0, min_round_ratio = 0, max_round_ratio = 0;  // raw CAF / mpx, per round
  double mpx_one = 0, caf_one = 0;
};

// Measures the echo of the mpx server at address:mpx_port from `node` and
// the CAF echo at address:caf_port from `system` (TLS when `caf_tls`).
PairResult measure_pair(ma::Node& node, caf::actor_system& system, bool caf_tls, const std::string& address,
                        std::uint16_t mpx_port, std::uint16_t caf_port, const Sizes& sizes) {
  const std::string peer = node.connect(address, mpx_port, 10s);
  ma::ActorRef echo = node.actor(peer, "echo");
  auto caf_remote = caf_tls ? caf::openssl::remote_actor(system, address, caf_port)
                            : system.middleman().remote_actor(address, caf_port);
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

  std::vector<double> mpx_us, caf_us, round_ratios;
  time_calls(200, mpx_once, mpx_us);  // warm-up
  time_calls(200, caf_once, caf_us);
  mpx_us.clear();
  caf_us.clear();
  constexpr int kRounds = 20;
  const int block = std::max(50, sizes.n_rtt / kRounds);
  for (int r = 0; r < kRounds; ++r) {
    std::vector<double> m, c;
    time_calls(block, mpx_once, m);
    time_calls(block, caf_once, c);
    round_ratios.push_back(mpx::bench::median(c) / mpx::bench::median(m));
    mpx_us.insert(mpx_us.end(), m.begin(), m.end());
    caf_us.insert(caf_us.end(), c.begin(), c.end());
  }
  PairResult result{{mpx::bench::median(mpx_us), mpx::bench::p99(mpx_us)},
                    {mpx::bench::median(caf_us), mpx::bench::p99(caf_us)},
                    mpx::bench::median(round_ratios),
                    *std::min_element(round_ratios.begin(), round_ratios.end()),
                    *std::max_element(round_ratios.begin(), round_ratios.end())};
  (void)mpx_oneway(sizes.n_one / 10);
  (void)caf_oneway(sizes.n_one / 10);
  for (int r = 0; r < sizes.repeat; ++r) {
    result.mpx_one = std::max(result.mpx_one, mpx_oneway(sizes.n_one));
    result.caf_one = std::max(result.caf_one, caf_oneway(sizes.n_one));
  }
  return result;
}

void print_pair(const std::string& suffix, const PairResult& r) {
  std::printf(
      "%-30s %10.1f us %10.1f us %8.2f  (median; p99 %.1f / %.1f us; rounds' ratios: median %.2f, %.2f-%.2f)\n",
      ("node_request_roundtrip" + suffix).c_str(), r.mpx_rtt.median_us, r.caf_rtt.median_us,
      r.caf_rtt.median_us / r.mpx_rtt.median_us, r.mpx_rtt.p99_us, r.caf_rtt.p99_us, r.round_ratio,
      r.min_round_ratio, r.max_round_ratio);
  std::printf("%-30s %8.0f msg/s %8.0f msg/s %8.2f\n", ("node_oneway_throughput" + suffix).c_str(), r.mpx_one,
              r.caf_one, r.mpx_one / r.caf_one);
}

void add_pair(std::vector<mpx::bench::Record>& records, const std::string& suffix, const std::string& peer,
              const std::string& note, const PairResult& r) {
  records.emplace_back("node_request_roundtrip" + suffix, "us", r.mpx_rtt.median_us,
                       mpx::bench::Record::Figures{{peer, r.caf_rtt.median_us}}, false,
                       note.empty() ? "median" : "median, " + note,
                       mpx::bench::Record::Figures{{"mpx_p99", r.mpx_rtt.p99_us},
                                                   {"caf_p99", r.caf_rtt.p99_us},
                                                   {"median_round_ratio", r.round_ratio},
                                                   {"min_round_ratio", r.min_round_ratio},
                                                   {"max_round_ratio", r.max_round_ratio}});
  records.emplace_back("node_oneway_throughput" + suffix, "msg/s", r.mpx_one,
                       mpx::bench::Record::Figures{{peer, r.caf_one}}, true, note);
}

// Median and max of `ms` (not empty).
struct Spread {
  double median, max;
};
Spread spread(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.back()};
}

}  // namespace

int main(int argc, char** argv) {
  const auto opt = mpx::bench::parse_options(argc, argv);
  const Sizes sizes{opt.repeat, opt.quick ? 2000 : 10000, opt.quick ? 20000 : 100000};
  std::vector<mpx::bench::Record> records;
  try {
    // Everything that forks comes first, while this process has no thread:
    // the certificates (openssl command), the namespaces (ip command), the servers.
    mpx::test::TempDir pki;
    mpx::test::make_ca(pki, "bench");
    mpx::test::make_certificate(pki, "bench", "node");
    const Tls tls{pki.file("node.pem"), pki.file("node.key"), pki.file("bench-ca.pem")};
    std::optional<mpx::test::NetNamespaces> net;  // 0: this process; 1: veth servers; 2: the node whose link is cut
    if (::geteuid() == 0) {
      net.emplace(3, kNetSubnet);
      mpx::test::NetNamespaces::enter(net->name(0));
    } else {
      std::fprintf(stderr,
                   "nodes_bench: not root: skipping node_request_roundtrip_veth, node_oneway_throughput_veth and "
                   "node_failure_detection_cut_link (network namespaces need root)\n");
    }
    const std::string lo = "127.0.0.1";
    Server mpx_server([&](int fd) { serve_mpx(fd, node_options("bench-server", lo, {})); });
    Server caf_server([&](int fd) { serve_caf(fd, lo, {}); });
    Server mpx_tls_server([&](int fd) { serve_mpx(fd, node_options("bench-tls-server", lo, tls)); });
    Server caf_tls_server([&](int fd) { serve_caf(fd, lo, tls); });
    std::unique_ptr<Server> mpx_veth_server, caf_veth_server, cut_victim;
    if (net) {
      const std::string far = net->address(1), cut = net->address(2);
      mpx_veth_server = std::make_unique<Server>(
          [&](int fd) { serve_mpx(fd, node_options("bench-veth-server", far, {}), net->name(1)); });
      caf_veth_server = std::make_unique<Server>([&](int fd) { serve_caf(fd, far, {}, net->name(1)); });
      cut_victim =
          std::make_unique<Server>([&](int fd) { serve_mpx(fd, node_options("bench-cut", cut, {}), net->name(2)); });
    }
    std::vector<std::unique_ptr<Server>> victims;
    const int n_kill = opt.quick ? 3 : 10;
    for (int k = 0; k < n_kill; ++k)
      victims.push_back(std::make_unique<Server>(
          [&, k](int fd) { serve_mpx(fd, node_options("bench-victim-" + std::to_string(k), lo, {})); }));

    PairResult plain, secure;
    std::optional<PairResult> veth;
    std::vector<double> detection_ms, cut_ms;
    {
      ma::Node node(node_options("bench-client", lo, {}));
      caf::actor_system_config cfg;
      configure_caf(cfg, {});
      caf::actor_system system{cfg};
      plain = measure_pair(node, system, false, lo, mpx_server.port(), caf_server.port(), sizes);

      for (auto& victim : victims) {
        const std::string v = node.connect(lo, victim->port(), 10s);
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
    }
    {
      ma::Node node(node_options("bench-tls-client", lo, tls));
      caf::actor_system_config cfg;
      configure_caf(cfg, tls);
      caf::actor_system system{cfg};
      secure = measure_pair(node, system, true, lo, mpx_tls_server.port(), caf_tls_server.port(), sizes);
    }
    if (net) {
      ma::Node node(node_options("bench-veth-client", net->address(0), {}));
      caf::actor_system_config cfg;
      configure_caf(cfg, {});
      caf::actor_system system{cfg};
      veth = measure_pair(node, system, false, net->address(1), mpx_veth_server->port(), caf_veth_server->port(),
                          sizes);

      const std::string v = node.connect(net->address(2), cut_victim->port(), 10s);
      ma::ActorRef echo = node.actor(v, "echo");
      const int n_cut = opt.quick ? 1 : 3;
      for (int c = 0; c < n_cut; ++c) {
        if (c > 0) (void)node.connect(net->address(2), cut_victim->port(), 10s);  // back after the last cut
        if (echo.request<int>(Ping{c}).get(10s) != c + 1) throw std::runtime_error("cut victim: wrong reply");
        auto m = ma::monitor(echo);
        const auto t0 = Clock::now();
        net->cut(2);
        auto down = m.wait(10s);
        const auto detected = Clock::now();
        net->restore(2);
        if (!down || down->kind != ma::DownKind::node_down)
          throw std::runtime_error("cut link: no node_down within 10 s");
        cut_ms.push_back(std::chrono::duration<double, std::milli>(detected - t0).count());
      }
    }

    std::printf("%-30s %12s %12s %8s\n", "scenario", "mpx", "raw CAF", "ratio");
    print_pair("", plain);
    const Spread by_kill = spread(detection_ms);
    std::printf("%-30s %10.1f ms %12s %8s  (median of %zu; max %.1f ms)\n", "node_failure_detection",
                by_kill.median, "-", "-", detection_ms.size(), by_kill.max);
    print_pair("_tls", secure);
    if (veth) {
      print_pair("_veth", *veth);
      const Spread by_cut = spread(cut_ms);
      std::printf("%-30s %10.1f ms %12s %8s  (median of %zu; max %.1f ms)\n", "node_failure_detection_cut_link",
                  by_cut.median, "-", "-", cut_ms.size(), by_cut.max);
    }

    add_pair(records, "", "caf_middleman", "", plain);
    records.emplace_back("node_failure_detection", "ms", by_kill.median, mpx::bench::Record::Figures{}, false,
                         "SIGKILL of the other node, median", mpx::bench::Record::Figures{{"max", by_kill.max}});
    add_pair(records, "_tls", "caf_openssl", "TLS on 127.0.0.1", secure);
    if (veth) {
      add_pair(records, "_veth", "caf_middleman", "two network namespaces over veth", *veth);
      const Spread by_cut = spread(cut_ms);
      records.emplace_back("node_failure_detection_cut_link", "ms", by_cut.median, mpx::bench::Record::Figures{}, false,
                           "veth link cut (ip link set down), monitor fires; heartbeat timeout 1.5 s; median",
                           mpx::bench::Record::Figures{{"max", by_cut.max}});
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nodes_bench: %s\n", e.what());
    return 1;
  }
  return mpx::bench::write_json(opt.json_path, "nodes_bench", records) ? 0 : 1;
}
