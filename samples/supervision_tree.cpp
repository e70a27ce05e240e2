// Supervisors: a three-level supervision tree, as in Erlang/OTP.
//
//   root (rest_for_one, this process)
//   |- logger       a process that idles
//   |- workers      a supervisor (one_for_one, at most 3 restarts in 5 s)
//   |  |- exiter      exits with mpx::exit(3) after a short while
//   |  |- segfaulter  raises SIGSEGV after a short while
//   |  '- thrower     throws an exception after a short while
//   '- escalating   a supervisor with intensity 0 (no restart allowed)
//      '- flaky       exits with 2 after a short while
//
// Every leaf crashes once, in its first incarnation only (a count of
// incarnations per leaf lives in shared memory, made before the tree is
// forked), then idles. workers restarts its three crashers: three restarts,
// within its intensity. escalating may not restart flaky: it gives up, stops
// its children and exits 1, which root sees as its child's abnormal exit (an
// escalation) and restarts it; rest_for_one restarts the children after the
// failed one, and escalating is the last, so logger and workers keep running.
//
//   supervision_tree [--timeout S]   (default 30 s)
//
// Every supervisor prints its exit reports as they arrive (on_exit, one line
// each: "report: root/escalating (pid 123) exited, exit code 1, restarts 0";
// the nested ones from their own processes), each leaf prints "workers/exiter
// (pid 124) started, incarnation 1". Main waits (bounded) until root has seen
// the escalation and restarted escalating, and every leaf was restarted once,
// then stops the tree (reverse order: the nested supervisors stop their own
// children first) and prints "tree stopped". Exits 0 when it all happened in
// time, 1 otherwise.
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mpx/actors.hpp"
#include "sample_support.hpp"
#include "mpx/sharedctypes.hpp"

namespace ma = mpx::actors;
using namespace std::chrono_literals;

namespace {

using mpx::samples::say;

// Printing in this process: main and root's watcher thread (on_exit) take
// turns. Only this process uses it: the nested supervisors are forked and
// print with say() alone (a mutex held by another thread at a fork would
// stay locked in the child).
std::mutex g_print_mutex;
void print(const std::string& line) {
  std::lock_guard lock(g_print_mutex);
  say(line);
}

enum Leaf : std::size_t { kExiter, kSegfaulter, kThrower, kFlaky, kLeaves };
const char* const kLeafNames[kLeaves] = {"workers/exiter", "workers/segfaulter", "workers/thrower", "escalating/flaky"};

// Per leaf, shared by every process of the tree: [leaf] counts the
// incarnations started, [kLeaves + leaf] those that have said so. Main waits
// on the second, so a leaf's "started" line is written before main's
// "stopping the tree" (the first alone is bumped before the line is written).
std::optional<mpx::RawArray<std::uint32_t>> g_starts;

std::atomic_ref<std::uint32_t> counter(std::size_t index) { return std::atomic_ref<std::uint32_t>((*g_starts)[index]); }

std::uint32_t announced(Leaf leaf) { return counter(kLeaves + leaf).load(std::memory_order_acquire); }

// Counts this incarnation, says so; true for the first one (the one that crashes).
bool first_incarnation(Leaf leaf) {
  const std::uint32_t n = counter(leaf).fetch_add(1, std::memory_order_acq_rel) + 1;
  say(std::string(kLeafNames[leaf]) + " (pid " + std::to_string(::getpid()) + ") started, incarnation " +
      std::to_string(n));
  counter(kLeaves + leaf).fetch_add(1, std::memory_order_acq_rel);
  return n == 1;
}

[[noreturn]] void idle_forever() {
  for (;;) ::pause();
}

void exiter() {
  if (first_incarnation(kExiter)) {
    std::this_thread::sleep_for(100ms);
    mpx::exit(3);
  }
  idle_forever();
}

void segfaulter() {
  if (first_incarnation(kSegfaulter)) {
    std::this_thread::sleep_for(150ms);
    (void)::prctl(PR_SET_DUMPABLE, 0);  // no core file
    ::signal(SIGSEGV, SIG_DFL);         // sanitizer builds catch SIGSEGV themselves
    ::raise(SIGSEGV);
  }
  idle_forever();
}

void thrower() {
  if (first_incarnation(kThrower)) {
    std::this_thread::sleep_for(200ms);
    throw std::runtime_error("thrower: something went wrong");
  }
  idle_forever();
}

void flaky() {
  if (first_incarnation(kFlaky)) {
    std::this_thread::sleep_for(100ms);
    mpx::exit(2);
  }
  idle_forever();
}

int usage(const char* argv0) {
  std::cerr << "usage: " << argv0 << " [--timeout S]   (1 <= S <= 600, default 30)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  long long timeout_s = 30;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    try {
      if (arg == "--timeout" && i + 1 < argc) {
        timeout_s = std::stoll(argv[++i]);
      } else {
        return usage(argv[0]);
      }
    } catch (const std::exception&) {
      return usage(argv[0]);
    }
  }
  if (timeout_s < 1 || timeout_s > 600) return usage(argv[0]);

  try {
    g_starts.emplace(2 * kLeaves);  // before the tree is forked: every process shares it

    // Nested supervisors print their reports from their own processes.
    auto nested_reports = [](const ma::ExitReport& r) { say("report: " + r.to_string()); };
    const auto workers = ma::SupervisorOptions()
                             .with_strategy(ma::Strategy::one_for_one)
                             .with_intensity(3, 5000ms)
                             .with_on_exit(nested_reports);
    const auto escalating = ma::SupervisorOptions()
                                .with_strategy(ma::Strategy::one_for_one)
                                .with_intensity(0, 5000ms)
                                .with_on_exit(nested_reports);

    ma::Supervisor root(
        "root",
        ma::SupervisorOptions()
            .with_strategy(ma::Strategy::rest_for_one)
            .with_intensity(3, 5000ms)
            .with_on_exit([](const ma::ExitReport& r) { print("report: " + r.to_string()); }),
        {ma::ChildSpec::process("logger", idle_forever),
         ma::ChildSpec::supervisor(
             "workers", workers,
             {ma::ChildSpec::process("exiter", exiter), ma::ChildSpec::process("segfaulter", segfaulter),
              ma::ChildSpec::process("thrower", thrower)}),
         ma::ChildSpec::supervisor("escalating", escalating, {ma::ChildSpec::process("flaky", flaky)})});
    {
      std::string line = "tree started: root (rest_for_one) with";
      for (const auto& c : root.which_children()) line += " " + c.id + " (pid " + std::to_string(c.pid) + ")";
      print(line);
    }

    // Wait (bounded) for the escalation, its restart, and every leaf's restart.
    std::optional<ma::ExitReport> escalation;
    std::optional<ma::ChildInfo> restarted;
    bool leaves_restarted = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      if (!escalation)
        for (const auto& r : root.reports())
          if (r.child == "escalating" && r.exit_code == 1) escalation = r;
      if (escalation && !restarted)
        for (const auto& c : root.which_children())
          if (c.id == "escalating" && c.state == "running" && c.restarts >= 1 && c.pid != escalation->pid)
            restarted = c;
      leaves_restarted = true;
      for (std::size_t leaf = 0; leaf < kLeaves; ++leaf) leaves_restarted = leaves_restarted && announced(Leaf(leaf)) >= 2;
      if (escalation && restarted && leaves_restarted) break;
      std::this_thread::sleep_for(5ms);
    }

    bool others_restarted = false;
    if (escalation && restarted)
      print("root saw the escalation: escalating (pid " + std::to_string(escalation->pid) +
            ") exited with 1; restarted as pid " + std::to_string(restarted->pid) + " (restart " +
            std::to_string(restarted->restarts) + ")");
    if (leaves_restarted) print("every leaf crashed once and runs again");
    for (const auto& c : root.which_children()) {
      print(c.id + ": " + c.state + ", pid " + std::to_string(c.pid) + ", restarts " + std::to_string(c.restarts));
      // rest_for_one: escalating is the last child, so nothing else was restarted.
      if (c.id != "escalating" && c.restarts != 0) others_restarted = true;
    }

    print("stopping the tree");
    root.stop();
    print("tree stopped");
    if (others_restarted) std::cerr << "supervision_tree: logger or workers was restarted" << std::endl;
    if (!escalation || !restarted || !leaves_restarted)
      std::cerr << "supervision_tree: the expected events did not happen within " << timeout_s << " s"
                << (escalation ? "" : " (no escalation)") << (restarted ? "" : " (escalating not restarted)")
                << (leaves_restarted ? "" : " (a leaf was not restarted)") << std::endl;
    return escalation && restarted && leaves_restarted && !others_restarted ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "supervision_tree: " << e.what() << std::endl;
    return 1;
  }
}
