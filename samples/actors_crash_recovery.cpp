// Actors: a host killed with SIGKILL in the middle of a stream of messages
// loses none of them.
//
// A named "counter" actor in host counter-host records every numbered
// message it handles in shared memory (RawArrays made by main before the
// host is started: the host is forked, so it shares them, and they outlive
// each host process). Main sends M numbered messages. Message K-1 is marked
// `hold`: its handler records it, says so (an mpx::Event) and stalls, as a
// slow handler would, so that the kill surely catches a message in hand.
// Main then sends Q more (they pile up behind it), SIGKILLs the host, joins
// it, sends D more while it is dead (they wait in its mailbox) and restarts
// it: the new process handles what the dead one had taken but not finished,
// and the message in hand again, flagged redelivered
// (Context::redelivered()): at-least-once, so that one is handled twice.
// A final request returns only after every message sent before it was
// handled (one sender's messages are handled in order), then main counts.
//
//   actors_crash_recovery [--count M] [--kill-at K] [--queued Q] [--down-for D] [--no-hold]
//                         (defaults: 20000, M / 2, 100, 1000)
//
// --no-hold: no message stalls; the kill lands wherever the host is after
// K + Q sends (maybe idle, maybe with a message in hand).
//
// Prints "sent M, handled H, redelivered R, lost L"; exits 1 unless
// nothing was lost and every message handled twice had been redelivered.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>

#include "mpx/actors.hpp"
#include "sample_support.hpp"
#include "mpx/event.hpp"
#include "mpx/sharedctypes.hpp"

namespace ma = mpx::actors;
using namespace std::chrono_literals;

namespace {

using mpx::samples::say;

struct Numbered {
  std::uint32_t seq = 0;
  bool hold = false;  // stall in the handler (see above), unless redelivered
  template <class A>
  void serialize(A& ar) {
    ar(seq, hold);
  }
};
struct Flush {
  template <class A>
  void serialize(A&) {}
};
struct Flushed {
  std::uint64_t handled_here = 0;  // by this host process (its count died with the last one)
  std::int32_t pid = 0;
  template <class A>
  void serialize(A& ar) {
    ar(handled_here, pid);
  }
};

// What the counter handled, in shared memory: made by main before the host
// starts, inherited by every (forked) host process.
struct Ledger {
  mpx::RawArray<std::uint32_t> handled;      // times message i was handled
  mpx::RawArray<std::uint32_t> redelivered;  // times it was handled flagged redelivered
  mpx::RawArray<std::uint32_t> stray;        // [0]: messages with a number out of range
  mpx::Event in_hand;                        // set by the handler of the `hold` message
  mpx::Event release;                        // ends its stall (set only when main gives up)
  explicit Ledger(std::uint32_t count) : handled(count), redelivered(count), stray(1) {}
};
std::optional<Ledger> g_ledger;

void bump(std::uint32_t& slot) { std::atomic_ref<std::uint32_t>(slot).fetch_add(1, std::memory_order_relaxed); }
std::uint32_t read(std::uint32_t& slot) { return std::atomic_ref<std::uint32_t>(slot).load(std::memory_order_relaxed); }

class Counter : public ma::Actor {
 public:
  explicit Counter(ma::Context& self) : Actor(self) {}
  ma::Behavior behavior() override {
    return {
        [this](const Numbered& m) {
          Ledger& ledger = *g_ledger;
          if (m.seq >= ledger.handled.size()) {
            bump(ledger.stray[0]);
            return;
          }
          const bool redelivered = self().redelivered();
          if (redelivered) bump(ledger.redelivered[m.seq]);
          bump(ledger.handled[m.seq]);
          ++handled_here_;
          if (m.hold && !redelivered) {
            ledger.in_hand.set();
            (void)ledger.release.wait(60s);  // the host is killed meanwhile
          }
        },
        [this](const Flush&) { return Flushed{handled_here_, static_cast<std::int32_t>(::getpid())}; },
    };
  }

 private:
  std::uint64_t handled_here_ = 0;
};
MPX_REGISTER_ACTOR_CLASS(Counter);

int usage(const char* argv0) {
  std::cerr << "usage: " << argv0 << " [--count M] [--kill-at K] [--queued Q] [--down-for D] [--no-hold]\n"
            << "  M >= 1 messages (default 20000); message K-1 is in hand when the host is killed\n"
            << "  (1 <= K <= M, default M / 2), Q more are sent before the kill (default 100),\n"
            << "  D more while the host is dead (default 1000); --no-hold: message K-1 does not stall\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  long long count = 20000, kill_at = -1, queued = 100, down_for = 1000;
  bool hold = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    try {
      if (arg == "--count" && i + 1 < argc) {
        count = std::stoll(argv[++i]);
      } else if (arg == "--kill-at" && i + 1 < argc) {
        kill_at = std::stoll(argv[++i]);
      } else if (arg == "--queued" && i + 1 < argc) {
        queued = std::stoll(argv[++i]);
      } else if (arg == "--down-for" && i + 1 < argc) {
        down_for = std::stoll(argv[++i]);
      } else if (arg == "--no-hold") {
        hold = false;
      } else {
        return usage(argv[0]);
      }
    } catch (const std::exception&) {
      return usage(argv[0]);
    }
  }
  if (kill_at < 0) kill_at = count / 2 > 0 ? count / 2 : 1;
  if (count < 1 || count > 10'000'000 || kill_at < 1 || kill_at > count || queued < 0 || down_for < 0)
    return usage(argv[0]);
  const auto sent = static_cast<std::uint32_t>(count);
  const long long killed_at = std::min(count, kill_at + queued);       // sent before the kill
  const long long restart_at = std::min(count, killed_at + down_for);  // sent before the restart

  try {
    g_ledger.emplace(sent);  // before the host is started: it is forked and shares it
    ma::Host host("counter-host", ma::HostOptions{}.with_start_method(mpx::StartMethod::fork));
    const ma::ActorRef counter = host.spawn("Counter", "counter");
    say("counter: " + counter.to_string());
    struct Release {  // if main gives up early, the held handler must not keep the host busy
      ~Release() { g_ledger->release.set(); }
    } release_on_exit;

    // By name: the ref stays valid across the restart, and what is sent to
    // the dead host waits in its mailbox.
    auto send_range = [&](long long from, long long to) {
      for (long long i = from; i < to; ++i)
        counter.send(Numbered{static_cast<std::uint32_t>(i), hold && i == kill_at - 1});
    };

    send_range(0, kill_at);
    if (hold) {
      if (!g_ledger->in_hand.wait(60s))
        throw mpx::TimeoutError("message " + std::to_string(kill_at - 1) + " never got in hand");
      say("the counter is handling message " + std::to_string(kill_at - 1));
    }
    send_range(kill_at, killed_at);

    const pid_t pid = host.pid();
    ::kill(pid, SIGKILL);
    host.join();
    const auto killed_code = host.exitcode();
    say("killed counter-host (pid " + std::to_string(pid) + ") after sending " + std::to_string(killed_at) +
        " messages: exit code " + (killed_code ? std::to_string(*killed_code) : std::string("?")) + ", " +
        std::to_string(host.in_flight()) + " taken but not finished, " + std::to_string(host.mailbox_depth()) +
        " waiting");

    send_range(killed_at, restart_at);
    say("sent " + std::to_string(restart_at - killed_at) + " messages while it was down: " +
        std::to_string(host.mailbox_depth()) + " waiting");
    host.restart();
    say("restarted counter-host as pid " + std::to_string(host.pid()) + " (restart " + std::to_string(host.restarts()) +
        ")");
    send_range(restart_at, count);

    // Handled after every message sent before it, so the ledger is complete.
    const Flushed last = counter.request<Flushed>(Flush{}).get(5min);
    say("the restarted host (pid " + std::to_string(last.pid) + ") handled " + std::to_string(last.handled_here) +
        " messages");

    Ledger& ledger = *g_ledger;
    std::uint64_t handled = 0, redelivered = 0, lost = 0, duplicates = 0, unflagged_duplicates = 0;
    for (std::uint32_t i = 0; i < sent; ++i) {
      const std::uint32_t h = read(ledger.handled[i]);
      const std::uint32_t r = read(ledger.redelivered[i]);
      handled += h;
      redelivered += r;
      if (h == 0) {
        ++lost;
        if (lost <= 10) std::cerr << "actors_crash_recovery: message " << i << " was never handled" << std::endl;
      }
      if (h > 1) {
        duplicates += h - 1;
        if (r < h - 1) ++unflagged_duplicates;
      }
      if (r > 0)
        say("message " + std::to_string(i) + " was redelivered: handled " + std::to_string(h) + " time" +
            (h == 1 ? "" : "s"));
    }
    const std::uint32_t stray = read(ledger.stray[0]);
    say("sent " + std::to_string(sent) + ", handled " + std::to_string(handled) + ", redelivered " +
        std::to_string(redelivered) + ", lost " + std::to_string(lost));
    say("duplicates " + std::to_string(duplicates) + " (handled twice because redelivered)");

    host.shutdown();
    const auto code = host.exitcode();
    say("host counter-host exited with " + (code ? std::to_string(*code) : std::string("?")));

    int failures = 0;
    auto check = [&](bool ok, const std::string& what) {
      if (!ok) {
        std::cerr << "actors_crash_recovery: check failed: " << what << std::endl;
        ++failures;
      }
    };
    check(lost == 0, std::to_string(lost) + " messages lost");
    check(handled >= sent, "handled fewer messages than were sent");
    check(duplicates <= redelivered && unflagged_duplicates == 0,
          "a message was handled again without being flagged redelivered");
    check(stray == 0, std::to_string(stray) + " messages with an unknown number");
    check(host.restarts() == 1, "the host was restarted " + std::to_string(host.restarts()) + " times");
    check(last.pid == host.pid(), "the final request was not answered by the restarted host");
    check(code == 0, "the host did not exit 0");
    return failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "actors_crash_recovery: " << e.what() << std::endl;
    return 1;
  }
}
