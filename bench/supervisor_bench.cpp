// Supervisor benchmarks, side by side in one run:
//   restart_latency       SIGKILL of a supervised worker host -> its
//                         replacement answers the next request (ms), beside
//                         the machine's bare fork + exec + wait of /bin/true
//   restart_latency_standby  the same with HostOptions::standby (the
//                         replacement was forked ahead, its CAF started)
//                         Kills are 100 ms apart in both (a crash storm, yet
//                         time for the next standby to start).
//   supervision_overhead  request round trip to an actor in a supervised host
//                         against one in a plain Host (us; goal: within 5 %).
//                         Round trips on 2 vCPUs vary 13-100 us with where
//                         the scheduler happens to put a host's threads, for
//                         the host's whole life: so the pair (a supervisor
//                         with its host, a plain host) is made anew for each
//                         of 60 rounds (many placements, few requests each:
//                         placement is what varies), the host made first
//                         alternates between rounds (the first of a pair
//                         tends to be the slower), the two alternate in
//                         blocks of 50 requests within a round, and the
//                         figures are medians over the rounds (and of their
//                         ratios).
// --json FILE writes one record per scenario; --quick, --repeat N as the others.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "mpx/actors.hpp"

extern char** environ;

namespace ma = mpx::actors;
using mpx::bench::Clock;

namespace {

struct Ping {
  template <class A>
  void serialize(A&) {}
};
ma::Behavior bench_pong(ma::Context&, int) {
  return {[](const Ping&) { return 1; }};
}
MPX_REGISTER_ACTOR(bench_pong);

using mpx::bench::median;
using mpx::bench::p99;

double bare_fork_exec_ms() {
  auto t0 = Clock::now();
  pid_t pid = 0;
  char arg0[] = "/bin/true";
  char* argv[] = {arg0, nullptr};
  if (::posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ) != 0) return -1;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double roundtrip_us(const ma::ActorRef& actor) {
  auto t0 = Clock::now();
  (void)actor.request<int>(Ping{}).get(std::chrono::seconds(30));
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// SIGKILL of the supervisor's only child (a host), then requests until its
// replacement answers: ms each.
std::vector<double> restart_latencies(const ma::Supervisor& sup, const ma::ActorRef& actor, int restarts) {
  std::vector<double> ms;
  for (int k = 0; k < restarts; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    pid_t victim = sup.which_children()[0].pid;
    auto t0 = Clock::now();
    ::kill(victim, SIGKILL);
    // The next request: fails while the host is down, succeeds once the replacement answers.
    for (;;) {
      try {
        if (actor.request<int>(Ping{}).get(std::chrono::seconds(30)) == 1) break;
      } catch (const ma::ActorDown&) {
        std::this_thread::yield();
      }
    }
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  const auto opt = mpx::bench::parse_options(argc, argv);
  const int restarts = opt.quick ? 5 : 20;

  std::vector<double> restart_ms, standby_ms, bare_ms, supervised_us, plain_us, round_ratios;
  try {
    const auto intensity = ma::SupervisorOptions().with_intensity(1000, std::chrono::milliseconds(60000));
    const int rounds = (opt.quick ? 4 : 20) * opt.repeat;
    for (int round = 0; round < rounds; ++round) {
      const std::string n = std::to_string(round);
      const auto make_plain = [&] {
        return std::make_unique<ma::Host>("bench-plain-" + n, ma::HostOptions(),
                                          std::vector<ma::ActorSpec>{ma::ActorSpec::make("bench_pong", "p", 0)});
      };
      const auto make_sup = [&] {
        return std::make_unique<ma::Supervisor>(
            "bench-sup-" + n, intensity,
            std::vector<ma::ChildSpec>{ma::ChildSpec::host("bench-supervised-" + n, ma::HostOptions(),
                                                           {ma::ActorSpec::make("bench_pong", "p", 0)})});
      };
      // The host made first of a pair tends to answer slower (where its
      // threads land): each kind goes first in every other round.
      std::unique_ptr<ma::Host> plain;
      std::unique_ptr<ma::Supervisor> sup;
      if (round % 2 == 0) {
        sup = make_sup();
        plain = make_plain();
      } else {
        plain = make_plain();
        sup = make_sup();
      }
      auto p_sup = sup->host("bench-supervised-" + n).actor("p");
      auto p_plain = plain->actor("p");
      for (int i = 0; i < 50; ++i) (void)roundtrip_us(p_sup), (void)roundtrip_us(p_plain);
      std::vector<double> s, u;
      constexpr int kBlock = 50;
      for (int block = 0; block < 4; ++block) {
        for (int i = 0; i < kBlock; ++i) s.push_back(roundtrip_us(p_sup));
        for (int i = 0; i < kBlock; ++i) u.push_back(roundtrip_us(p_plain));
      }
      supervised_us.push_back(median(s));
      plain_us.push_back(median(u));
      round_ratios.push_back(median(s) / median(u));
    }
    ma::Supervisor sup("bench-sup", intensity,
                       {ma::ChildSpec::host("bench-supervised", ma::HostOptions(),
                                            {ma::ActorSpec::make("bench_pong", "p", 0)})});
    auto p_sup = sup.host("bench-supervised").actor("p");
    for (int i = 0; i < 200; ++i) (void)roundtrip_us(p_sup);
    restart_ms = restart_latencies(sup, p_sup, restarts);
    for (int k = 0; k < restarts; ++k) bare_ms.push_back(bare_fork_exec_ms());
    ma::Supervisor warm("bench-sup-standby", intensity,
                        {ma::ChildSpec::host("bench-standby", ma::HostOptions().with_standby(),
                                             {ma::ActorSpec::make("bench_pong", "p", 0)})});
    auto p_warm = warm.host("bench-standby").actor("p");
    for (int i = 0; i < 200; ++i) (void)roundtrip_us(p_warm);
    standby_ms = restart_latencies(warm, p_warm, restarts);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "supervisor_bench: %s\n", e.what());
    return 1;
  }
  const double r_med = median(restart_ms), r_p99 = p99(restart_ms), b_med = median(bare_ms);
  const double s_med = median(supervised_us), u_med = median(plain_us);
  const std::vector<mpx::bench::Record> rows{
      {"restart_latency", "ms", r_med, {{"bare_spawn_exec", b_med}}, false,
       "SIGKILL of a supervised host -> first answer of its replacement; peer: posix_spawn+wait of /bin/true; "
       "goal < 5 ms",
       {{"mpx_p99", r_p99}}},
      {"restart_latency_standby", "ms", median(standby_ms), {{"bare_spawn_exec", b_med}, {"cold_restart", r_med}},
       false,
       "as restart_latency with HostOptions::standby (replacement forked ahead, its CAF started); goal < 5 ms",
       {{"mpx_p99", p99(standby_ms)}}},
      {"supervision_overhead", "us", s_med, {{"unsupervised_host", u_med}}, false,
       "request round trip to an actor in a supervised host; peer: the same actor in a plain Host; medians over " +
           std::to_string(supervised_us.size()) + " rounds of fresh hosts; goal <= 1.05x",
       {{"median_round_ratio", median(round_ratios)},
        {"min_round_ratio", *std::min_element(round_ratios.begin(), round_ratios.end())},
        {"max_round_ratio", *std::max_element(round_ratios.begin(), round_ratios.end())}}},
  };
  mpx::bench::print_records(rows);
  if (!mpx::bench::write_json(opt.json_path, "supervisor_bench", rows)) return 1;
  return 0;
}
