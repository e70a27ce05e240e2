// Actors: ping-pong between two actors in two worker processes.
//
// A "pinger" actor in host ping-host and a "ponger" actor in host pong-host
// exchange N pings. Main sends the pinger one Start message (a request); the
// pinger takes over the reply with a ResponsePromise, then sends the ponger
// one Ping at a time with request().then(): each continuation runs later in
// the pinger, never blocking it, measures the round trip and sends the next
// Ping. After the last Pong the pinger delivers the result to main.
//
//   actors_ping_pong [--count N]          (default: 10000 pings)
//
// Prints how many pings were exchanged between which processes and the
// median round trip; exits 1 when a check fails (a lost or mismatched pong,
// an actor in the wrong process, a host that does not exit 0).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mpx/actors.hpp"
#include "sample_support.hpp"

namespace ma = mpx::actors;
using namespace std::chrono_literals;

namespace {

using mpx::samples::say;

struct Ping {
  std::uint64_t seq = 0;
  template <class A>
  void serialize(A& ar) {
    ar(seq);
  }
};
struct Pong {
  std::uint64_t seq = 0;
  std::int32_t pid = 0;  // the process the ponger runs in
  template <class A>
  void serialize(A& ar) {
    ar(seq, pid);
  }
};
struct Start {
  ma::ActorRef ponger;
  std::uint64_t count = 0;
  template <class A>
  void serialize(A& ar) {
    ar(ponger, count);
  }
};
struct PingResult {
  std::uint64_t exchanged = 0;
  std::int32_t pinger_pid = 0;
  std::int32_t ponger_pid = 0;
  std::int64_t min_ns = 0, median_ns = 0, p99_ns = 0, max_ns = 0, total_ns = 0;
  template <class A>
  void serialize(A& ar) {
    ar(exchanged, pinger_pid, ponger_pid, min_ns, median_ns, p99_ns, max_ns, total_ns);
  }
};

using Clock = std::chrono::steady_clock;

ma::Behavior ponger(ma::Context&) {
  return {
      [](const Ping& ping) { return Pong{ping.seq, static_cast<std::int32_t>(::getpid())}; },
  };
}
MPX_REGISTER_ACTOR(ponger);

// One exchange in progress, shared by the continuations of the pinger.
struct Exchange {
  ma::ActorRef ponger;
  std::uint64_t count = 0;
  std::uint64_t next_seq = 0;
  std::int32_t ponger_pid = 0;
  Clock::time_point started;
  Clock::time_point sent_at;
  std::vector<std::int64_t> round_trips_ns;
  ma::ResponsePromise<PingResult> reply;  // to main
};

void fail(const std::shared_ptr<Exchange>& x, const std::string& type, const std::string& why) {
  x->reply.deliver_error(type, why);
}

void finish(const std::shared_ptr<Exchange>& x) {
  PingResult r;
  r.exchanged = x->round_trips_ns.size();
  r.pinger_pid = static_cast<std::int32_t>(::getpid());
  r.ponger_pid = x->ponger_pid;
  r.total_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - x->started).count();
  auto& v = x->round_trips_ns;
  if (!v.empty()) {
    std::sort(v.begin(), v.end());
    r.min_ns = v.front();
    r.median_ns = v[v.size() / 2];
    r.p99_ns = v[std::min(v.size() - 1, v.size() * 99 / 100)];
    r.max_ns = v.back();
  }
  x->reply.deliver(r);
}

// Sends the next ping; its continuation sends the one after.
void ping_next(const std::shared_ptr<Exchange>& x) {
  if (x->next_seq == x->count) {
    finish(x);
    return;
  }
  const std::uint64_t seq = x->next_seq++;
  try {
    x->sent_at = Clock::now();
    x->ponger.request<Pong>(Ping{seq}).then(
        [x, seq](const Pong& pong) {
          const auto rtt = Clock::now() - x->sent_at;
          if (pong.seq != seq) {
            fail(x, "PingPongError", "pong " + std::to_string(pong.seq) + " answered ping " + std::to_string(seq));
            return;
          }
          if (x->ponger_pid == 0) x->ponger_pid = pong.pid;
          if (pong.pid != x->ponger_pid) {
            fail(x, "PingPongError", "pongs came from two processes");
            return;
          }
          x->round_trips_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(rtt).count());
          ping_next(x);
        },
        [x, seq](const mpx::Error& e) { fail(x, "PingFailed", "ping " + std::to_string(seq) + ": " + e.what()); });
  } catch (const std::exception& e) {
    fail(x, "PingFailed", "ping " + std::to_string(seq) + ": " + e.what());
  }
}

ma::Behavior pinger(ma::Context& self) {
  return {
      [&self](const Start& start) {
        auto x = std::make_shared<Exchange>();
        x->ponger = start.ponger;
        x->count = start.count;
        x->round_trips_ns.reserve(start.count);
        x->reply = self.make_response_promise<PingResult>();
        x->started = Clock::now();
        ping_next(x);
        return x->reply;  // deferred: the last continuation delivers
      },
  };
}
MPX_REGISTER_ACTOR(pinger);

std::string micros(std::int64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(ns) / 1000.0);
  return buf;
}

int usage(const char* argv0) {
  std::cerr << "usage: " << argv0 << " [--count N]   (N >= 1, default 10000)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t count = 10000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--count" && i + 1 < argc) {
      try {
        const long long n = std::stoll(argv[++i]);
        if (n < 1) return usage(argv[0]);
        count = static_cast<std::uint64_t>(n);
      } catch (const std::exception&) {
        return usage(argv[0]);
      }
    } else {
      return usage(argv[0]);
    }
  }

  try {
    ma::Host ping_host("ping-host");
    ma::Host pong_host("pong-host");
    const ma::ActorRef pong = pong_host.spawn("ponger", "ponger");
    const ma::ActorRef ping = ping_host.spawn("pinger", "pinger");
    say("pinger: " + ping.to_string());
    say("ponger: " + pong.to_string());

    // The whole exchange happens between the two hosts; main only waits for its result.
    const PingResult r = ping.request<PingResult>(Start{pong, count}).get(10min);

    say("exchanged " + std::to_string(r.exchanged) + " pings between ping-host (pid " + std::to_string(r.pinger_pid) +
        ") and pong-host (pid " + std::to_string(r.ponger_pid) + ")");
    say("round trip median: " + micros(r.median_ns) + " us (min " + micros(r.min_ns) + " us, p99 " +
        micros(r.p99_ns) + " us, max " + micros(r.max_ns) + " us)");
    const double seconds = static_cast<double>(r.total_ns) / 1e9;
    char rate[96];
    std::snprintf(rate, sizeof rate, "%.3f s in all, %.0f round trips/s", seconds,
                  seconds > 0 ? static_cast<double>(r.exchanged) / seconds : 0.0);
    say(rate);

    int failures = 0;
    auto check = [&](bool ok, const std::string& what) {
      if (!ok) {
        std::cerr << "actors_ping_pong: check failed: " << what << std::endl;
        ++failures;
      }
    };
    check(r.exchanged == count, "exchanged " + std::to_string(r.exchanged) + " of " + std::to_string(count));
    check(r.pinger_pid == ping_host.pid(), "the pinger ran in pid " + std::to_string(r.pinger_pid) +
                                               ", not in ping-host (pid " + std::to_string(ping_host.pid()) + ")");
    check(r.ponger_pid == pong_host.pid(), "the ponger ran in pid " + std::to_string(r.ponger_pid) +
                                               ", not in pong-host (pid " + std::to_string(pong_host.pid()) + ")");
    check(r.pinger_pid != ::getpid() && r.ponger_pid != ::getpid() && r.pinger_pid != r.ponger_pid,
          "the two actors must run in two processes other than main");

    for (ma::Host* host : {&ping_host, &pong_host}) {
      host->shutdown();
      const auto code = host->exitcode();
      say("host " + host->name() + " exited with " + (code ? std::to_string(*code) : std::string("?")));
      check(code == 0, "host " + host->name() + " did not exit 0");
    }
    return failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "actors_ping_pong: " << e.what() << std::endl;
    return 1;
  }
}
