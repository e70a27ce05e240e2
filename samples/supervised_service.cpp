// Supervisors: seed 16 (joinable consumers) as a supervised actor service.
// A one_for_one Supervisor "service" runs consumer hosts consumer-1..C, each
// with a registered "consumer" actor. The producer (main) requests N tasks
// from the consumers, round robin, all in flight at once. After half of them
// it SIGKILLs consumer-2 while that consumer has a task in hand; the
// supervisor restarts the host (after a 500 ms backoff, so that it is
// visibly down for a while) on the same mailbox, and the consumer actor is
// spawned again.
//
// What the producer sees, and does:
// - the requests in flight to the killed host fail with ActorDown, and so do
//   the ones sent to it while it is down (their host incarnation died; the
//   messages themselves wait in the mailbox and the restarted host handles
//   them, but their replies are dropped). The producer waits until the
//   supervisor shows consumer-2 running with a new pid, then resends every
//   failed task to its consumer: at-least-once.
// - it counts answers by task id: every task is answered exactly once.
// The consumers record every task they handle in shared memory (made before
// the hosts are forked), so the sample can report the duplicates that
// at-least-once costs: the task in hand at the kill (redelivered, flagged
// Context::redelivered(), after the restart) and the tasks handled from the
// mailbox whose requests had failed before they were resent.
//
//   supervised_service [--tasks N] [--consumers C] [--task-ms MS]   (defaults: 200, 3, 5)
//
// Prints the pids, the kill and the restart, the failed requests, "all N
// tasks done, each answered exactly once (R after a resend)", the
// duplicates, the restarts, the supervisor's exit reports ("consumer-2 (pid
// 123) killed by signal, exit code -9") and, after sup.stop(), the reports
// of the orderly stop and "supervisor stopped". Exits 1 when a check fails.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mpx/actors.hpp"
#include "sample_support.hpp"
#include "mpx/event.hpp"
#include "mpx/sharedctypes.hpp"

namespace ma = mpx::actors;
using namespace std::chrono_literals;

namespace {

using mpx::samples::say;

struct Task {
  std::int32_t id = 0;
  std::int64_t a = 0, b = 0;
  std::int32_t ms = 0;  // pretend to take this long
  bool hold = false;    // stall until the host is killed (see Ledger), unless redelivered
  template <class A>
  void serialize(A& ar) {
    ar(id, a, b, ms, hold);
  }
};
struct Answer {
  std::int32_t task = 0;
  std::int64_t a = 0, b = 0, product = 0;
  std::string consumer;  // the host that computed it
  std::int32_t pid = 0;
  bool redelivered = false;
  template <class A>
  void serialize(A& ar) {
    ar(task, a, b, product, consumer, pid, redelivered);
  }
};

// What the consumers handled, in shared memory: made by main before the
// supervisor starts the hosts (fork start method), inherited by every host
// process, restarted ones included.
struct Ledger {
  mpx::RawArray<std::uint32_t> handled;      // times task i was handled
  mpx::RawArray<std::uint32_t> redelivered;  // of which flagged redelivered
  mpx::Event in_hand;                        // set by the handler of the `hold` task
  mpx::Event release;                        // ends its stall (set only when main gives up)
  explicit Ledger(std::uint32_t count) : handled(count), redelivered(count) {}
};
std::optional<Ledger> g_ledger;

void bump(std::uint32_t& slot) { std::atomic_ref<std::uint32_t>(slot).fetch_add(1, std::memory_order_relaxed); }
std::uint32_t read(std::uint32_t& slot) { return std::atomic_ref<std::uint32_t>(slot).load(std::memory_order_relaxed); }

ma::Behavior consumer(ma::Context& self) {
  return {
      [&self](const Task& task) {
        Ledger& ledger = *g_ledger;
        const bool redelivered = self.redelivered();
        if (task.id >= 0 && static_cast<std::size_t>(task.id) < ledger.handled.size()) {
          bump(ledger.handled[static_cast<std::size_t>(task.id)]);
          if (redelivered) bump(ledger.redelivered[static_cast<std::size_t>(task.id)]);
        }
        if (task.hold && !redelivered) {
          ledger.in_hand.set();
          (void)ledger.release.wait(60s);  // the host is killed meanwhile
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(task.ms));
        }
        const auto pid = static_cast<std::int32_t>(::getpid());
        return Answer{task.id, task.a, task.b, task.a * task.b, self.host(), pid, redelivered};
      },
  };
}
MPX_REGISTER_ACTOR(consumer);

int usage(const char* argv0) {
  std::cerr << "usage: " << argv0 << " [--tasks N] [--consumers C] [--task-ms MS]\n"
            << "  4 <= N <= 100000 tasks (default 200), 2 <= C <= 16 consumers (default 3),\n"
            << "  0 <= MS <= 1000 ms per task (default 5)\n";
  return 2;
}

std::string host_name(std::size_t k) { return "consumer-" + std::to_string(k + 1); }

std::string describe(const ma::ExitReport& r) {
  return r.child + " (pid " + std::to_string(r.pid) + ") " + r.how + ", exit code " +
         (r.exit_code ? std::to_string(*r.exit_code) : std::string("unknown"));
}

std::optional<ma::ChildInfo> child(const ma::Supervisor& sup, const std::string& id) {
  for (auto& c : sup.which_children())
    if (c.id == id) return c;
  return std::nullopt;
}

// Polls the supervisor (bounded) until `done(info)` holds for child `id`.
template <class Pred>
std::optional<ma::ChildInfo> wait_child(const ma::Supervisor& sup, const std::string& id, Pred done,
                                        std::chrono::seconds limit = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto info = child(sup, id);
    if (info && done(*info)) return info;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(1ms);
  }
}

}  // namespace

int main(int argc, char** argv) {
  long long num_tasks = 200, num_consumers = 3, task_ms = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    try {
      if (arg == "--tasks" && i + 1 < argc) {
        num_tasks = std::stoll(argv[++i]);
      } else if (arg == "--consumers" && i + 1 < argc) {
        num_consumers = std::stoll(argv[++i]);
      } else if (arg == "--task-ms" && i + 1 < argc) {
        task_ms = std::stoll(argv[++i]);
      } else {
        return usage(argv[0]);
      }
    } catch (const std::exception&) {
      return usage(argv[0]);
    }
  }
  if (num_tasks < 4 || num_tasks > 100000 || num_consumers < 2 || num_consumers > 16 || task_ms < 0 || task_ms > 1000)
    return usage(argv[0]);
  const auto N = static_cast<std::int32_t>(num_tasks);
  const auto C = static_cast<std::size_t>(num_consumers);
  const std::int32_t kill_after = N / 2;  // tasks sent before the kill
  constexpr std::size_t kVictim = 1;      // consumer-2
  const std::string victim = host_name(kVictim);
  // Task i goes to consumer i % C. The last task for consumer-2 before the
  // kill stalls in its handler: the kill surely catches it in hand.
  std::int32_t held = -1;
  for (std::int32_t i = 0; i < kill_after; ++i)
    if (static_cast<std::size_t>(i) % C == kVictim) held = i;

  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    if (!ok) {
      std::cerr << "supervised_service: check failed: " << what << std::endl;
      ++failures;
    }
  };

  try {
    g_ledger.emplace(static_cast<std::uint32_t>(N));  // before the hosts are forked: they share it
    const auto backoff_ms = 500ms;
    ma::Backoff backoff;
    backoff.min = backoff_ms;  // the first restart waits 500 ms: consumer-2 is down meanwhile
    backoff.max = 2000ms;
    std::vector<ma::ChildSpec> children;
    for (std::size_t k = 0; k < C; ++k)
      children.push_back(ma::ChildSpec::host(host_name(k), ma::HostOptions().with_start_method(mpx::StartMethod::fork),
                                             {ma::ActorSpec::make("consumer", "consumer")}));
    ma::Supervisor sup("service",
                       ma::SupervisorOptions()
                           .with_strategy(ma::Strategy::one_for_one)
                           .with_intensity(3, 5000ms)
                           .with_backoff(backoff),
                       std::move(children));
    struct Release {  // if main gives up early, the held handler must not keep its host busy
      ~Release() { g_ledger->release.set(); }
    } release_on_exit;

    say("supervisor service: " + std::to_string(C) + " consumers (one_for_one, restart backoff " +
        std::to_string(backoff_ms.count()) + " ms)");
    for (const auto& c : sup.which_children()) say(c.id + " running as pid " + std::to_string(c.pid));

    // Named refs: valid across a restart of their host.
    std::vector<ma::ActorRef> consumers;
    for (std::size_t k = 0; k < C; ++k) consumers.push_back(sup.host(host_name(k)).actor("consumer"));

    struct Attempt {
      std::int32_t task;
      std::size_t consumer;
      ma::Response<Answer> response;
    };
    std::vector<Attempt> attempts;
    std::vector<int> requests(static_cast<std::size_t>(N), 0);
    auto send = [&](std::int32_t i) {
      const std::size_t k = static_cast<std::size_t>(i) % C;
      // Only the first request for the held task holds (not its resend).
      const Task task{i, i, i + 1, static_cast<std::int32_t>(task_ms),
                      i == held && requests[static_cast<std::size_t>(i)] == 0};
      ++requests[static_cast<std::size_t>(i)];
      attempts.push_back(Attempt{i, k, consumers[k].request<Answer>(task)});
    };

    // First half.
    for (std::int32_t i = 0; i < kill_after; ++i) send(i);
    say("sent " + std::to_string(kill_after) + " of " + std::to_string(N) + " tasks");

    // Kill consumer-2 while it handles its last task of the first half.
    if (!g_ledger->in_hand.wait(60s)) throw mpx::TimeoutError("task " + std::to_string(held) + " never got in hand");
    say(victim + " is handling task " + std::to_string(held));
    const auto before = child(sup, victim);
    if (!before || before->state != "running") throw ma::ActorError(victim + " is not running");
    const pid_t killed = before->pid;
    ::kill(killed, SIGKILL);
    say("killed " + victim + " (pid " + std::to_string(killed) + ") with SIGKILL after sending " +
        std::to_string(kill_after) + " tasks");
    // The supervisor sees the death and schedules the restart (the backoff).
    const auto down =
        wait_child(sup, victim, [&](const ma::ChildInfo& c) { return c.state != "running" || c.pid != killed; });
    check(down.has_value(), "the supervisor did not notice the death of " + victim);
    if (down && down->state == "restarting") say(victim + " is down: the supervisor restarts it after the backoff");

    // Second half, round robin as before: consumer-2's tasks wait in its mailbox.
    int to_victim = 0;
    std::set<std::int32_t> sent_while_down;
    for (std::int32_t i = kill_after; i < N; ++i) {
      send(i);
      if (static_cast<std::size_t>(i) % C == kVictim) {
        ++to_victim;
        sent_while_down.insert(i);
      }
    }
    const auto after_sending = child(sup, victim);
    const bool still_down = after_sending && after_sending->state == "restarting";
    say("sent tasks " + std::to_string(kill_after) + ".." + std::to_string(N - 1) + ": " + std::to_string(to_victim) +
        " of them to " + victim + (still_down ? " while it was down" : ", some after its restart"));
    if (!still_down) sent_while_down.clear();  // not known which: the report does not claim any

    // Deterministic: the supervisor shows consumer-2 running again, with a new pid.
    const auto restarted = wait_child(
        sup, victim, [&](const ma::ChildInfo& c) { return c.state == "running" && c.pid != killed && c.pid != 0; });
    if (!restarted) throw mpx::TimeoutError(victim + " was not restarted within 30 s");
    say(victim + " restarted as pid " + std::to_string(restarted->pid) + " (restart " +
        std::to_string(restarted->restarts) + ")");

    // Gather; resend what failed with ActorDown (at-least-once), a bounded number of rounds.
    std::vector<int> answers(static_cast<std::size_t>(N), 0);
    std::map<std::string, int> per_consumer;
    int flagged = 0, resent = 0;
    std::size_t next = 0;
    for (int round = 1;; ++round) {
      std::vector<std::int32_t> failed;
      std::string first_reason;
      for (; next < attempts.size(); ++next) {
        Attempt& at = attempts[next];
        try {
          const Answer answer = at.response.get(60s);
          ++answers[static_cast<std::size_t>(at.task)];
          ++per_consumer[answer.consumer];
          flagged += answer.redelivered;
          check(answer.task == at.task, "a request for task " + std::to_string(at.task) + " was answered for task " +
                                            std::to_string(answer.task));
          check(answer.a == at.task && answer.b == at.task + 1 && answer.product == answer.a * answer.b,
                "task " + std::to_string(at.task) + " has a wrong answer");
          check(answer.consumer == host_name(at.consumer),
                "task " + std::to_string(at.task) + " answered by " + answer.consumer);
        } catch (const ma::ActorDown& e) {
          failed.push_back(at.task);
          if (first_reason.empty()) first_reason = e.reason();
        }
      }
      if (failed.empty()) break;
      int in_flight = 0, while_down = 0;
      for (auto t : failed) {
        if (t < kill_after) ++in_flight;
        if (sent_while_down.count(t)) ++while_down;
      }
      say(std::to_string(failed.size()) + " requests failed with ActorDown (" + first_reason +
          "): " + std::to_string(in_flight) + " in flight at the kill, " + std::to_string(while_down) + " sent while " +
          victim + " was down; resending them");
      if (round == 5) throw ma::ActorError("still failing after 5 rounds of resends");
      for (auto t : failed) {
        // Resend once the task's consumer runs again (it normally does: restarted above).
        const std::string id = host_name(static_cast<std::size_t>(t) % C);
        if (!wait_child(sup, id, [](const ma::ChildInfo& c) { return c.state == "running"; }))
          throw mpx::TimeoutError(id + " is not running");
        send(t);
        ++resent;
      }
    }

    // Every task answered exactly once, from the producer's point of view.
    int once = 0;
    for (std::int32_t i = 0; i < N; ++i) {
      const int n = answers[static_cast<std::size_t>(i)];
      check(n == 1, "task " + std::to_string(i) + " answered " + std::to_string(n) + " times");
      once += n == 1;
    }
    if (once == N)
      say("all " + std::to_string(N) + " tasks done, each answered exactly once (" + std::to_string(resent) +
          " after a resend)");
    else
      say("only " + std::to_string(once) + " of " + std::to_string(N) + " tasks answered exactly once");
    for (std::size_t k = 0; k < C; ++k)
      say(host_name(k) + " answered " + std::to_string(per_consumer[host_name(k)]) + " tasks");

    // What at-least-once cost the consumers. Complete: a resend went to the
    // same consumer after the failed request (one sender's messages are
    // handled in order), and was answered.
    Ledger& ledger = *g_ledger;
    std::uint64_t handled = 0, redelivered = 0, lost = 0, duplicated = 0, unexplained = 0;
    int down_handled = 0;
    for (std::int32_t i = 0; i < N; ++i) {
      const auto slot = static_cast<std::size_t>(i);
      const std::uint32_t h = read(ledger.handled[slot]);
      const std::uint32_t r = read(ledger.redelivered[slot]);
      handled += h;
      redelivered += r;
      if (h == 0) ++lost;
      if (h > 1) ++duplicated;
      // At most once per request, plus once per redelivery.
      if (h > static_cast<std::uint32_t>(requests[slot]) + r) ++unexplained;
      if (sent_while_down.count(i) && h >= 2) ++down_handled;
      if (r > 0)
        say("task " + std::to_string(i) + " was in hand at the kill: redelivered after the restart, handled " +
            std::to_string(h) + " times");
    }
    say("the consumers handled " + std::to_string(handled) +
        " tasks: " + std::to_string(handled - static_cast<std::uint64_t>(N) + lost) + " duplicates in " +
        std::to_string(duplicated) + " tasks (at-least-once), " + std::to_string(redelivered) + " redelivered, " +
        std::to_string(lost) + " never handled");
    if (!sent_while_down.empty())
      say("of the " + std::to_string(sent_while_down.size()) + " tasks sent while " + victim + " was down, " +
          std::to_string(down_handled) +
          " were handled from its mailbox after the restart (their replies dropped) and again on resend");
    check(lost == 0, std::to_string(lost) + " tasks were never handled");
    check(unexplained == 0,
          std::to_string(unexplained) + " tasks were handled more often than requested or redelivered");
    check(redelivered <= 1, "more than one task redelivered: one actor had one task in hand");
    check(flagged == 0 || flagged == 1, "answers flagged redelivered: " + std::to_string(flagged));

    // Restarts and the exit reports.
    unsigned restarts = 0;
    for (const auto& c : sup.which_children()) restarts += c.restarts;
    say("restarts: " + std::to_string(restarts));
    check(restarts == 1, "expected one restart");
    const auto reports = sup.reports();
    for (const auto& r : reports) say("exit report: " + describe(r));
    check(reports.size() == 1 && reports[0].child == victim && reports[0].pid == killed &&
              reports[0].exit_code == -SIGKILL,
          "expected one exit report: " + victim + " killed by SIGKILL");

    sup.stop();  // consumers in reverse order: poison pills, each host exits 0
    const auto all = sup.reports();
    for (std::size_t i = reports.size(); i < all.size(); ++i) {
      say("exit report: " + describe(all[i]));
      check(all[i].exit_code == 0, all[i].child + " did not exit 0 when stopped");
    }
    check(all.size() == reports.size() + C, "expected an exit report per consumer at the stop");
    say("supervisor stopped");
  } catch (const std::exception& e) {
    std::cerr << "supervised_service: " << e.what() << std::endl;
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
