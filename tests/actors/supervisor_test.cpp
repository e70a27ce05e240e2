// Supervisors: strategies, restart types, intensity and escalation, backoff,
// orderly stop, exit reports. Real processes; restart sets checked by pid.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "exit_reports.hpp"
#include "mpx/actors.hpp"
#include "mpx/event.hpp"
#include "supervisor_snapshots.hpp"
#include "tally_actor.hpp"
#include "test_support.hpp"

#include <nlohmann/json.hpp>

using namespace std::chrono_literals;
namespace ma = mpx::actors;
using mpx::test::child_named;
using mpx::test::ReportLog;
using mpx::test::wait_for_child;

namespace {

[[noreturn]] void idle_forever() {
  for (;;) ::pause();
}

std::map<std::string, pid_t> pids(const ma::Supervisor& sup) {
  std::map<std::string, pid_t> out;
  for (const auto& c : sup.which_children()) out[c.id] = c.pid;
  return out;
}

// Waits (bounded) until every child runs again and the supervisor has made
// at least `reports` exit reports.
bool settled(const ma::Supervisor& sup, std::size_t reports, std::chrono::seconds limit = 30s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    bool all = true;
    for (const auto& c : sup.which_children()) all = all && c.state == "running";
    if (all && sup.reports().size() >= reports) return true;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

std::vector<ma::ChildSpec> three_idle_children() {
  return {ma::ChildSpec::process("a", idle_forever), ma::ChildSpec::process("b", idle_forever),
          ma::ChildSpec::process("c", idle_forever)};
}

ma::SupervisorOptions with(ma::Strategy strategy) {
  return ma::SupervisorOptions().with_strategy(strategy).with_intensity(10, 10000ms);
}

}  // namespace

TEST(Supervisor, OneForOneRestartsOnlyTheDeadChild) {
  ma::Supervisor sup("s-one", with(ma::Strategy::one_for_one), three_idle_children());
  auto before = pids(sup);
  ::kill(before["b"], SIGKILL);
  ASSERT_TRUE(settled(sup, 1));
  auto after = pids(sup);
  EXPECT_EQ(after["a"], before["a"]);
  EXPECT_NE(after["b"], before["b"]);
  EXPECT_EQ(after["c"], before["c"]);
  auto reports = sup.reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].child, "b");
  EXPECT_EQ(reports[0].pid, before["b"]);
  EXPECT_EQ(reports[0].exit_code, -SIGKILL);
  EXPECT_EQ(sup.which_children()[1].restarts, 1u);
}

TEST(Supervisor, OneForAllRestartsEveryChild) {
  ma::Supervisor sup("s-all", with(ma::Strategy::one_for_all), three_idle_children());
  auto before = pids(sup);
  ::kill(before["b"], SIGKILL);
  ASSERT_TRUE(settled(sup, 3));
  auto after = pids(sup);
  for (const auto& id : {"a", "b", "c"}) EXPECT_NE(after[id], before[id]) << id;
  auto reports = sup.reports();
  ASSERT_EQ(reports.size(), 3u);
  EXPECT_EQ(reports[0].child, "b");  // the failure, then the siblings in reverse order
  EXPECT_EQ(reports[1].child, "c");
  EXPECT_EQ(reports[2].child, "a");
  EXPECT_EQ(reports[1].how, "stopped by the supervisor");
}

TEST(Supervisor, RestForOneRestartsTheChildAndTheOnesAfterIt) {
  ma::Supervisor sup("s-rest", with(ma::Strategy::rest_for_one), three_idle_children());
  auto before = pids(sup);
  ::kill(before["b"], SIGKILL);
  ASSERT_TRUE(settled(sup, 2));
  auto after = pids(sup);
  EXPECT_EQ(after["a"], before["a"]);
  EXPECT_NE(after["b"], before["b"]);
  EXPECT_NE(after["c"], before["c"]);
}

TEST(Supervisor, RestartTypes) {
  ma::Supervisor sup(
      "s-types", with(ma::Strategy::one_for_one),
      {ma::ChildSpec::process("transient-ok", [] { mpx::exit(0); }).with_restart(ma::RestartType::transient),
       ma::ChildSpec::process("temporary", [] { mpx::exit(3); }).with_restart(ma::RestartType::temporary),
       ma::ChildSpec::process("anchor", idle_forever)});
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (sup.reports().size() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(2ms);
  auto children = sup.which_children();
  EXPECT_EQ(children[0].state, "stopped");  // exit 0: a transient child stays down
  EXPECT_EQ(children[0].last_exit, 0);
  EXPECT_EQ(children[1].state, "stopped");  // temporary: never restarted
  EXPECT_EQ(children[1].last_exit, 3);
  EXPECT_EQ(children[0].restarts + children[1].restarts, 0u);
  EXPECT_EQ(sup.count_children().active, 1u);
}

TEST(Supervisor, TransientChildIsRestartedAfterAnAbnormalExit) {
  ma::Supervisor sup("s-transient", with(ma::Strategy::one_for_one),
                     {ma::ChildSpec::process("t", idle_forever).with_restart(ma::RestartType::transient)});
  auto before = pids(sup)["t"];
  ::kill(before, SIGKILL);
  ASSERT_TRUE(settled(sup, 1));
  EXPECT_NE(pids(sup)["t"], before);
}

TEST(Supervisor, IntensityExceededStopsEveryChildAndFails) {
  ma::Supervisor sup("s-intensity", ma::SupervisorOptions().with_intensity(2, 10000ms),
                     {ma::ChildSpec::process("steady", idle_forever), ma::ChildSpec::process("crasher", [] { mpx::exit(1); })});
  auto steady = pids(sup)["steady"];
  ASSERT_TRUE(sup.wait_failed(30000ms));
  EXPECT_NE(sup.failure().find("maximum restart intensity"), std::string::npos) << sup.failure();
  EXPECT_NE(::kill(steady, 0), 0);  // stopped (and reaped) by the supervisor
  std::size_t crashes = 0;
  for (const auto& r : sup.reports())
    if (r.child == "crasher") ++crashes;
  EXPECT_EQ(crashes, 3u);  // two restarts allowed, the third failure gives up
}

TEST(Supervisor, NestedSupervisorEscalatesToItsParent) {
  ma::SupervisorOptions inner = ma::SupervisorOptions().with_intensity(0, 10000ms);
  ma::Supervisor sup("s-outer", with(ma::Strategy::one_for_one),
                     {ma::ChildSpec::supervisor("inner", inner,
                                                {ma::ChildSpec::process("leaf", [] {
                                                  std::this_thread::sleep_for(50ms);
                                                  mpx::exit(2);
                                                })})});
  // The leaf exits 2; the inner supervisor may not restart (intensity 0): it
  // gives up and exits 1; the outer one restarts the inner supervisor.
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = sup.reports();
    if (!r.empty()) break;
    std::this_thread::sleep_for(5ms);
  }
  auto reports = sup.reports();
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports[0].child, "inner");
  EXPECT_EQ(reports[0].exit_code, 1);
  ASSERT_TRUE(settled(sup, 1));
}

TEST(Supervisor, BackoffDelaysGrow) {
  std::mutex m;
  std::vector<std::chrono::steady_clock::time_point> exits;
  ma::Backoff backoff;
  backoff.min = 100ms;
  backoff.max = 400ms;
  ma::Supervisor sup("s-backoff",
                     ma::SupervisorOptions().with_intensity(10, 60000ms).with_backoff(backoff).with_on_exit(
                         [&](const ma::ExitReport&) {
                           std::lock_guard lock(m);
                           exits.push_back(std::chrono::steady_clock::now());
                         }),
                     {ma::ChildSpec::process("crasher", [] { mpx::exit(1); })});
  auto deadline = std::chrono::steady_clock::now() + 30s;
  for (;;) {
    {
      std::lock_guard lock(m);
      if (exits.size() >= 5 || std::chrono::steady_clock::now() > deadline) break;
    }
    std::this_thread::sleep_for(5ms);
  }
  sup.stop();
  std::lock_guard lock(m);
  ASSERT_GE(exits.size(), 5u);
  // Gaps include the child's own start and run; only lower bounds are strict.
  const long expected[] = {100, 200, 400, 400};
  for (int i = 0; i < 4; ++i) {
    auto gap = std::chrono::duration_cast<std::chrono::milliseconds>(exits[i + 1] - exits[i]).count();
    EXPECT_GE(gap, expected[i]) << "gap " << i;
  }
}

TEST(Supervisor, StopEscalatesToSigkillForAChildIgnoringSigterm) {
  std::vector<ma::ExitReport> reports;
  mpx::Event ignoring;  // made before the fork: shared with the child
  {
    ma::Supervisor sup("s-stop", ma::SupervisorOptions(),
                       {ma::ChildSpec::process("polite", idle_forever),
                        ma::ChildSpec::process("stubborn", [ignoring]() mutable {
                          ::signal(SIGTERM, SIG_IGN);
                          ignoring.set();
                          idle_forever();
                        }).with_shutdown(200ms)});
    ASSERT_TRUE(ignoring.wait(30s));
    sup.stop();
    reports = sup.reports();
  }
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].child, "stubborn");  // reverse order
  EXPECT_EQ(reports[0].exit_code, -SIGKILL);
  EXPECT_EQ(reports[1].child, "polite");
  EXPECT_EQ(reports[1].exit_code, -SIGTERM);
}

TEST(Supervisor, ExitReportsForExitExceptionSegfaultAndKill) {
  ma::Supervisor sup(
      "s-reports", ma::SupervisorOptions().with_intensity(0, 1000ms),
      {ma::ChildSpec::process("exit3", [] { mpx::exit(3); }).with_restart(ma::RestartType::temporary),
       ma::ChildSpec::process("throws", [] { throw std::runtime_error("bad"); }).with_restart(ma::RestartType::temporary),
       ma::ChildSpec::process("segv", [] {
         ::signal(SIGSEGV, SIG_DFL);  // sanitizer builds catch SIGSEGV themselves
         ::raise(SIGSEGV);
       }).with_restart(ma::RestartType::temporary),
       ma::ChildSpec::process("killed", [] { ::raise(SIGKILL); }).with_restart(ma::RestartType::temporary)});
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (sup.reports().size() < 4 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(2ms);
  std::map<std::string, std::optional<int>> codes;
  for (const auto& r : sup.reports()) codes[r.child] = r.exit_code;
  EXPECT_EQ(codes["exit3"], 3);
  EXPECT_EQ(codes["throws"], 1);
  EXPECT_EQ(codes["segv"], -SIGSEGV);
  EXPECT_EQ(codes["killed"], -SIGKILL);
  EXPECT_FALSE(sup.failed());  // temporary children do not count as restarts
}

// ---- host children

namespace {
using mpx::test::Bump;
using mpx::test::Read;
using mpx::test::WhoAmI;
ma::Behavior tally(ma::Context&, int start) { return mpx::test::tally_behavior(start); }
MPX_REGISTER_ACTOR(tally);
}  // namespace

TEST(Supervisor, HostChildIsRestartedWithItsMailboxAndActors) {
  ma::Supervisor sup("s-hosts", with(ma::Strategy::one_for_one),
                     {ma::ChildSpec::host("sup-worker", ma::HostOptions(), {ma::ActorSpec::make("tally", "t", 100)})});
  auto t = sup.host("sup-worker").actor("t");
  EXPECT_EQ(t.request<int>(Read{}).get(30s), 100);
  auto before = pids(sup)["sup-worker"];
  ::kill(before, SIGKILL);
  for (int i = 0; i < 10; ++i) t.send(Bump{});  // wait in the mailbox, or reach the new host
  ASSERT_TRUE(settled(sup, 1));
  EXPECT_NE(pids(sup)["sup-worker"], before);
  EXPECT_EQ(t.request<int>(Read{}).get(30s), 110);  // the re-spawned actor got every one
  sup.stop();
  EXPECT_THROW((void)t.request<int>(Read{}).get(30s), ma::ActorDown);
}

TEST(Supervisor, SigkilledNestedSupervisorComesBackWithItsHostsMailboxes) {
  // The nested supervisor owns its host's mailbox; this process holds the
  // mailbox open (it sends to it). SIGKILL of the nested supervisor kills its
  // host too; the restarted supervisor must take the left mailbox over, with
  // the messages sent meanwhile, instead of failing on "already exists".
  ma::Supervisor sup("s-nested-kill", with(ma::Strategy::one_for_one),
                     {ma::ChildSpec::supervisor(
                         "inner", with(ma::Strategy::one_for_one),
                         {ma::ChildSpec::host("nested-worker", ma::HostOptions(), {ma::ActorSpec::make("tally", "t", 100)})})});
  const ma::ActorRef t("nested-worker", "t", 0, 0);  // by name: valid across restarts
  auto read_eventually = [&] {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    for (;;) {
      try {
        return t.request<int>(Read{}).get(30s);
      } catch (const ma::ActorDown&) {  // the host is (re)starting
        if (std::chrono::steady_clock::now() > deadline) throw;
        std::this_thread::sleep_for(2ms);
      }
    }
  };
  EXPECT_EQ(read_eventually(), 100);
  const pid_t before = pids(sup)["inner"];
  ASSERT_GT(before, 0);
  // The old host dies of its parent's death a moment after it: wait for that
  // (its pidfd), so that no Bump below is handled by the old instance.
  const int old_host = static_cast<int>(::syscall(SYS_pidfd_open, t.request<int>(WhoAmI{}).get(30s), 0));
  ASSERT_GE(old_host, 0);
  ASSERT_EQ(::kill(before, SIGKILL), 0);
  pollfd gone{old_host, POLLIN, 0};
  ASSERT_EQ(::poll(&gone, 1, 30000), 1) << "the old host outlived its supervisor";
  ::close(old_host);
  for (int i = 0; i < 10; ++i) t.send(Bump{});  // wait in the left mailbox, or reach the new host
  ASSERT_TRUE(settled(sup, 1));
  EXPECT_NE(pids(sup)["inner"], before);
  EXPECT_EQ(read_eventually(), 110);  // the new host took over the mailbox with every Bump in it
  EXPECT_EQ(sup.reports().size(), 1u) << "the nested supervisor was restarted once, not until intensity ran out";
  sup.stop();
}

TEST(Supervisor, SimpleOneForOneMakesChildrenFromATemplate) {
  ma::Supervisor sup("s-simple", ma::SupervisorOptions().with_strategy(ma::Strategy::simple_one_for_one).with_intensity(5, 10000ms),
                     {ma::ChildSpec::process("worker", idle_forever)});
  EXPECT_EQ(sup.count_children().specs, 0u);
  auto a = sup.start_child();
  auto b = sup.start_child();
  EXPECT_EQ(a, "worker-1");
  EXPECT_EQ(b, "worker-2");
  auto before = pids(sup);
  ::kill(before["worker-1"], SIGKILL);
  ASSERT_TRUE(settled(sup, 1));
  auto after = pids(sup);
  EXPECT_NE(after["worker-1"], before["worker-1"]);
  EXPECT_EQ(after["worker-2"], before["worker-2"]);
  sup.terminate_child("worker-2");
  EXPECT_NE(::kill(before["worker-2"], 0), 0);
  EXPECT_EQ(sup.count_children().specs, 1u);
  EXPECT_THROW(sup.terminate_child("worker-2"), ma::ActorError);
}

TEST(Supervisor, StartChildOnAnyStrategyAndDuplicateIdsAreRefused) {
  ma::Supervisor sup("s-dynamic", with(ma::Strategy::one_for_one), {ma::ChildSpec::process("a", idle_forever)});
  EXPECT_EQ(sup.start_child(ma::ChildSpec::process("b", idle_forever)), "b");
  EXPECT_THROW(sup.start_child(ma::ChildSpec::process("b", idle_forever)), ma::ActorError);
  EXPECT_THROW(sup.start_child(), ma::ActorError);  // no template
  EXPECT_EQ(sup.count_children().active, 2u);
}

TEST(Supervisor, AutoShutdownAnySignificant) {
  ma::Supervisor sup("s-auto-any", ma::SupervisorOptions().with_auto_shutdown(ma::AutoShutdown::any_significant),
                     {ma::ChildSpec::process("steady", idle_forever),
                      ma::ChildSpec::process("job", [] { mpx::exit(0); })
                          .with_restart(ma::RestartType::transient)
                          .with_significant()});
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!sup.finished() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(2ms);
  EXPECT_TRUE(sup.finished());
  EXPECT_FALSE(sup.failed());
  EXPECT_EQ(sup.count_children().active, 0u);
}

TEST(Supervisor, AutoShutdownAllSignificantWaitsForTheLast) {
  mpx::Event release;
  ma::Supervisor sup("s-auto-all", ma::SupervisorOptions().with_auto_shutdown(ma::AutoShutdown::all_significant),
                     {ma::ChildSpec::process("quick", [] { mpx::exit(0); })
                          .with_restart(ma::RestartType::temporary)
                          .with_significant(),
                      ma::ChildSpec::process("slow", [release]() mutable {
                        (void)release.wait(60s);
                        mpx::exit(0);
                      })
                          .with_restart(ma::RestartType::temporary)
                          .with_significant()});
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (sup.reports().empty() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(2ms);
  EXPECT_FALSE(sup.finished());  // "slow" still runs
  release.set();
  while (!sup.finished() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(2ms);
  EXPECT_TRUE(sup.finished());
}

TEST(Supervisor, SnapshotAsJson) {
  ma::Supervisor sup("s-snapshot", with(ma::Strategy::one_for_one),
                     {ma::ChildSpec::process("p", idle_forever),
                      ma::ChildSpec::host("snap-host", ma::HostOptions(), {ma::ActorSpec::make("tally", "t", 0)})});
  auto snap = sup.snapshot();
  ASSERT_EQ(snap.children.size(), 2u);
  EXPECT_EQ(snap.children[1].kind, "host");
  EXPECT_EQ(snap.children[1].mailbox_depth, 0u);
  auto json = nlohmann::json::parse(snap.to_json());
  EXPECT_EQ(json["name"], "s-snapshot");
  EXPECT_EQ(json["strategy"], "one_for_one");
  EXPECT_EQ(json["children"][0]["id"], "p");
  EXPECT_EQ(json["children"][0]["state"], "running");
  EXPECT_EQ(json["children"][0]["pid"], pids(sup)["p"]);
  EXPECT_EQ(json["children"][1]["mailbox_depth"], 0);
  EXPECT_TRUE(json["children"][0]["last_exit"].is_null());
}

TEST(Supervisor, SnapshotShowsAHostsMessageRate) {
  ma::Supervisor sup("s-rate", with(ma::Strategy::one_for_one),
                     {ma::ChildSpec::host("rate-host", ma::HostOptions(), {ma::ActorSpec::make("tally", "t", 0)})});
  (void)sup.snapshot();  // a baseline (the published status also takes readings)
  auto t = sup.host("rate-host").actor("t");
  for (int i = 0; i < 100; ++i) t.send(Bump{});
  EXPECT_EQ(t.request<int>(Read{}).get(30s), 100);  // all taken by now
  EXPECT_GE(sup.host("rate-host").messages_taken(), 101u);
  auto second = sup.snapshot();
  ASSERT_TRUE(second.children[0].messages_per_s);
  EXPECT_GT(*second.children[0].messages_per_s, 0.0);
  EXPECT_NE(second.to_json().find("\"messages_per_s\""), std::string::npos);
}

namespace {

bool is_child_of(pid_t child, pid_t parent) {
  for (const auto& e : mpx::test::children_of(parent))
    if (e.pid == child) return true;
  return false;
}

}  // namespace

TEST(Supervisor, SnapshotShowsNestedSupervisorsChildrenToAnyDepth) {
  // root (this process) -> s-tree-mid -> s-tree-inner -> deep-leaf: three levels
  // of supervisors, each nested one in its own process.
  ma::Supervisor sup("s-tree", with(ma::Strategy::one_for_one),
                     {ma::ChildSpec::process("top-leaf", idle_forever),
                      ma::ChildSpec::supervisor(
                          "s-tree-mid", with(ma::Strategy::one_for_one),
                          {ma::ChildSpec::process("mid-leaf", idle_forever),
                           ma::ChildSpec::supervisor("s-tree-inner", with(ma::Strategy::one_for_one),
                                                     {ma::ChildSpec::process("deep-leaf", idle_forever)})})});
  const std::vector<std::string> deep{"s-tree-mid", "s-tree-inner", "deep-leaf"};
  auto running = [](const ma::ChildSnapshot& c) { return c.state == "running" && c.pid > 0; };
  const auto first = wait_for_child(sup, deep, running);
  ASSERT_TRUE(first) << sup.snapshot().to_json(2);
  const auto snap = sup.snapshot();
  const auto* mid = child_named(snap.children, "s-tree-mid");
  ASSERT_TRUE(mid);
  EXPECT_EQ(mid->kind, "supervisor");
  EXPECT_EQ(mid->pid, pids(sup)["s-tree-mid"]);
  const auto* mid_leaf = child_named(mid->children, "mid-leaf");
  const auto* inner = child_named(mid->children, "s-tree-inner");
  ASSERT_TRUE(mid_leaf && inner) << snap.to_json(2);
  EXPECT_EQ(mid_leaf->kind, "process");
  EXPECT_EQ(inner->kind, "supervisor");
  // The pids shown are the real processes of the tree.
  EXPECT_TRUE(is_child_of(mid_leaf->pid, mid->pid)) << mid_leaf->pid;
  EXPECT_TRUE(is_child_of(inner->pid, mid->pid)) << inner->pid;
  EXPECT_TRUE(is_child_of(first->pid, inner->pid)) << first->pid;
  EXPECT_EQ(first->restarts, 0u);
  EXPECT_FALSE(first->last_exit);
  // The JSON (what mpx-top --json shows) has the same tree.
  const auto json = nlohmann::json::parse(snap.to_json());
  EXPECT_EQ(json["children"][1]["children"][1]["children"][0]["id"], "deep-leaf");
  EXPECT_EQ(json["children"][0].count("children"), 0u);  // a process child has none

  // A grandchild of a grandchild dies: the root's view shows its restart.
  ASSERT_EQ(::kill(first->pid, SIGKILL), 0);
  const auto restarted = wait_for_child(sup, deep, [&](const ma::ChildSnapshot& c) {
    return running(c) && c.pid != first->pid && c.restarts == 1;
  });
  ASSERT_TRUE(restarted) << sup.snapshot().to_json(2);
  EXPECT_EQ(restarted->last_exit, -SIGKILL);
  EXPECT_TRUE(is_child_of(restarted->pid, inner->pid)) << restarted->pid;
  const auto after = sup.snapshot();
  const auto* mid_after = child_named(after.children, "s-tree-mid");
  ASSERT_TRUE(mid_after);
  EXPECT_EQ(mid_after->pid, mid->pid);  // only the leaf was restarted
  EXPECT_EQ(mid_after->restarts, 0u);
  const auto* inner_after = child_named(mid_after->children, "s-tree-inner");
  ASSERT_TRUE(inner_after);
  EXPECT_EQ(inner_after->pid, inner->pid);
  EXPECT_EQ(inner_after->restarts, 0u);
  EXPECT_TRUE(sup.reports().empty());  // the root itself restarted nothing

  // The middle supervisor is SIGKILLed (its children die with it): its
  // restart publishes again under its name, and the root shows the new tree.
  ASSERT_EQ(::kill(mid->pid, SIGKILL), 0);
  const auto new_leaf = wait_for_child(sup, deep, [&](const ma::ChildSnapshot& c) {
    return running(c) && c.pid != restarted->pid && c.restarts == 0;
  });
  ASSERT_TRUE(new_leaf) << sup.snapshot().to_json(2);
  const auto last = sup.snapshot();
  const auto* new_mid = child_named(last.children, "s-tree-mid");
  ASSERT_TRUE(new_mid);
  EXPECT_NE(new_mid->pid, mid->pid);
  EXPECT_EQ(new_mid->restarts, 1u);
  const auto* new_inner = child_named(new_mid->children, "s-tree-inner");
  ASSERT_TRUE(new_inner);
  EXPECT_TRUE(is_child_of(new_inner->pid, new_mid->pid)) << new_inner->pid;
  EXPECT_TRUE(is_child_of(new_leaf->pid, new_inner->pid)) << new_leaf->pid;
}

// ---- exceptions in reports, limits per child

namespace {

// Burns CPU; returns after 60 s of wall time if no limit ended it.
void burn_cpu() {
  const auto end = std::chrono::steady_clock::now() + 60s;
  volatile std::uint64_t x = 0;
  while (std::chrono::steady_clock::now() < end)
    for (int i = 0; i < 1'000'000; ++i) x = x + 1;
}

// 1 GiB, not touched (one byte): only an address-space limit makes it fail.
void allocate_a_gibibyte() {
  constexpr std::size_t size = std::size_t{1} << 30;
  char* block = new char[size];
  static_cast<volatile char*>(block)[0] = 1;  // the allocation may not be elided
  delete[] block;
}

}  // namespace

TEST(Supervisor, ExitReportCarriesTheUncaughtException) {
  ReportLog log;
  mpx::Event threw;  // made before the fork: the restarted child sees it set
  mpx::Event idle;
  ma::Supervisor sup(
      "s-exceptions", log.options(),
      {ma::ChildSpec::process("throws", [threw, idle]() mutable {
         if (!threw.is_set()) {
           threw.set();
           throw std::runtime_error("boom");
         }
         idle.set();  // the restart: waits to be SIGKILLed
         idle_forever();
       }),
       ma::ChildSpec::process("exit3", [] { mpx::exit(3); }).with_restart(ma::RestartType::temporary),
       ma::ChildSpec::process("int", [] { throw 7; }).with_restart(ma::RestartType::temporary)});
  ASSERT_TRUE(log.wait_for(3));
  ASSERT_TRUE(idle.wait(60s));
  ::kill(pids(sup)["throws"], SIGKILL);  // the same child's slot, after a restart: no stale exception
  ASSERT_TRUE(log.wait_for(4));
  auto by_child = log.by_child();
  ASSERT_EQ(by_child["throws"].size(), 2u);
  const auto& boom = by_child["throws"][0];
  EXPECT_EQ(boom.exit_code, 1);
  ASSERT_TRUE(boom.exception);
  EXPECT_EQ(boom.exception->type, "std::runtime_error");
  EXPECT_EQ(boom.exception->message, "boom");
  EXPECT_NE(boom.to_string().find("uncaught std::runtime_error: boom"), std::string::npos) << boom.to_string();
  const auto& killed = by_child["throws"][1];
  EXPECT_EQ(killed.exit_code, -SIGKILL);
  EXPECT_EQ(killed.restarts, 1u);
  EXPECT_FALSE(killed.exception) << killed.exception->type;
  ASSERT_EQ(by_child["exit3"].size(), 1u);
  EXPECT_EQ(by_child["exit3"][0].exit_code, 3);
  EXPECT_FALSE(by_child["exit3"][0].exception);  // mpx::exit is not an exception
  ASSERT_EQ(by_child["int"].size(), 1u);
  ASSERT_TRUE(by_child["int"][0].exception);
  EXPECT_EQ(by_child["int"][0].exception->type, "int");
  EXPECT_EQ(by_child["int"][0].exception->message, "");
  // The history holds the same reports.
  bool in_history = false;
  for (const auto& r : sup.reports())
    in_history = in_history || (r.child == "throws" && r.exception && r.exception->message == "boom");
  EXPECT_TRUE(in_history);
}

TEST(Supervisor, AnAddressSpaceLimitAppliesAtEveryRestart) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Both reserve terabytes of address space for their shadow memory: under
  // RLIMIT_AS their own allocators fail before the code under test runs.
  GTEST_SKIP() << "RLIMIT_AS and the sanitizer's shadow memory do not mix";
#endif
  ReportLog log;
  mpx::ProcessLimits limits;
  limits.address_space = std::uint64_t{512} << 20;
  // Intensity 1: the first failure is restarted (under the limit again), the
  // second makes the supervisor give up.
  ma::Supervisor sup("s-memory", log.options(1),
                     {ma::ChildSpec::process("greedy", allocate_a_gibibyte).with_limits(limits)});
  ASSERT_TRUE(sup.wait_failed(60000ms));
  const auto reports = log.copy();
  ASSERT_EQ(reports.size(), 2u);
  for (unsigned i = 0; i < 2; ++i) {
    EXPECT_EQ(reports[i].exit_code, 1) << i;
    EXPECT_EQ(reports[i].restarts, i);
    ASSERT_TRUE(reports[i].exception) << i << ": the allocation did not fail";
    EXPECT_EQ(reports[i].exception->type, "std::bad_alloc");
  }
}

TEST(Supervisor, ACpuLimitKillsTheChildAndItIsRestarted) {
  ReportLog log;
  mpx::ProcessLimits limits;
  limits.cpu_seconds = 1;
  ma::Supervisor sup("s-cpu", log.options(), {ma::ChildSpec::process("spinner", burn_cpu).with_limits(limits)});
  ASSERT_TRUE(log.wait_for(2));  // the first run and its restart both hit the limit
  sup.stop();
  const auto reports = log.copy();
  for (unsigned i = 0; i < 2; ++i) {
    EXPECT_EQ(reports[i].exit_code, -SIGXCPU) << i;
    EXPECT_EQ(reports[i].how, "killed by signal");
    EXPECT_EQ(reports[i].restarts, i);
    EXPECT_FALSE(reports[i].exception);
  }
}

TEST(Supervisor, BadLimitsThrowActorErrorForEveryKind) {
  mpx::ProcessLimits bad;
  bad.nice = 25;
  EXPECT_THROW(ma::Supervisor("s-bad-limits", ma::SupervisorOptions(),
                              {ma::ChildSpec::process("a", idle_forever), ma::ChildSpec::process("b", idle_forever).with_limits(bad)}),
               ma::ActorError);
  EXPECT_THROW(ma::Supervisor("s-bad-host-limits", ma::SupervisorOptions(),
                              {ma::ChildSpec::process("a", idle_forever),
                               ma::ChildSpec::host("bad-limits-host", ma::HostOptions(), {}).with_limits(bad)}),
               ma::ActorError);
  // The host's mailbox was removed: the name can be used again.
  ma::Supervisor sup("s-host-limits-ok", ma::SupervisorOptions(),
                     {ma::ChildSpec::host("bad-limits-host", ma::HostOptions(), {})});
  EXPECT_EQ(sup.count_children().active, 1u);
}

namespace {

// The soft limit /proc/<pid>/limits shows for `what` ("Max open files"), or "".
std::string soft_limit(pid_t pid, const std::string& what) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(what, 0) == 0) {
      std::istringstream fields(line.substr(what.size()));
      std::string soft;
      fields >> soft;
      return soft;
    }
  return "";
}

struct Burn {
  template <class A>
  void serialize(A&) {}
};
ma::Behavior burner(ma::Context&) {
  return {[](const Burn&) { burn_cpu(); }};
}
MPX_REGISTER_ACTOR(burner);

}  // namespace

TEST(Supervisor, HostChildLimitsApplyAtEveryRestart) {
  // HostOptions::limits, and a spec's limits replacing them.
  mpx::ProcessLimits files;
  files.open_files = 200;
  mpx::ProcessLimits spec_files;
  spec_files.open_files = 300;
  ma::Supervisor sup("s-host-files", with(ma::Strategy::one_for_one),
                     {ma::ChildSpec::host("files-host", ma::HostOptions().with_limits(files), {}),
                      ma::ChildSpec::host("spec-files-host", ma::HostOptions().with_limits(files), {})
                          .with_limits(spec_files)});
  auto before = pids(sup);
  EXPECT_EQ(soft_limit(before["files-host"], "Max open files"), "200");
  EXPECT_EQ(soft_limit(before["spec-files-host"], "Max open files"), "300");
  ::kill(before["files-host"], SIGKILL);
  ::kill(before["spec-files-host"], SIGKILL);
  ASSERT_TRUE(settled(sup, 2));
  auto after = pids(sup);
  ASSERT_NE(after["files-host"], before["files-host"]);
  EXPECT_EQ(soft_limit(after["files-host"], "Max open files"), "200");
  EXPECT_EQ(soft_limit(after["spec-files-host"], "Max open files"), "300");
}

TEST(Supervisor, ACpuLimitKillsAHostChildAndItIsRestarted) {
  ReportLog log;
  mpx::ProcessLimits limits;
  limits.cpu_seconds = 1;
  ma::Supervisor sup("s-host-cpu", log.options(),
                     {ma::ChildSpec::host("cpu-host", ma::HostOptions(), {ma::ActorSpec::make("burner", "b")})
                          .with_limits(limits)
                          .with_shutdown(0ms)});
  // The host dies burning the first Burn; the restarted one is given it again
  // (redelivered: it was in hand) and dies of it too.
  auto b = sup.host("cpu-host").actor("b");
  b.send(Burn{});
  b.send(Burn{});
  ASSERT_TRUE(log.wait_for(2));
  sup.stop();
  const auto reports = log.copy();
  for (unsigned i = 0; i < 2; ++i) {
    EXPECT_EQ(reports[i].child, "cpu-host");
    EXPECT_EQ(reports[i].exit_code, -SIGXCPU) << i;
    EXPECT_EQ(reports[i].how, "killed by signal");
    EXPECT_EQ(reports[i].restarts, i);
    EXPECT_FALSE(reports[i].exception);
  }
}

namespace host_crash {
struct Unbuildable {};  // not a std::exception: the host's spawn loop cannot log it and go on
ma::Behavior unbuildable(ma::Context&) { throw Unbuildable{}; }
MPX_REGISTER_ACTOR(unbuildable);
}  // namespace host_crash

TEST(Supervisor, ExitReportCarriesTheExceptionAHostDiedOf) {
  ReportLog log;
  // Intensity 1: the host dies at its start and at its restart, then the
  // supervisor gives up; both reports name the exception.
  ma::Supervisor sup("s-host-exception", log.options(1),
                     {ma::ChildSpec::host("crashing-host", ma::HostOptions(), {ma::ActorSpec::make("unbuildable", "u")})});
  ASSERT_TRUE(sup.wait_failed(60000ms));
  const auto reports = log.copy();
  ASSERT_EQ(reports.size(), 2u);
  for (unsigned i = 0; i < 2; ++i) {
    EXPECT_EQ(reports[i].child, "crashing-host");
    EXPECT_EQ(reports[i].exit_code, 1) << i;
    EXPECT_EQ(reports[i].restarts, i);
    ASSERT_TRUE(reports[i].exception) << i;
    EXPECT_EQ(reports[i].exception->type, "host_crash::Unbuildable");
    EXPECT_EQ(reports[i].exception->message, "");
    EXPECT_NE(reports[i].to_string().find("uncaught host_crash::Unbuildable"), std::string::npos)
        << reports[i].to_string();
  }
}

TEST(Supervisor, AHostStoppedInOrderHasNoException) {
  ReportLog log;
  {
    ma::Supervisor sup("s-host-clean", log.options(),
                       {ma::ChildSpec::host("clean-host", ma::HostOptions(), {ma::ActorSpec::make("tally", "t", 0)})});
    EXPECT_EQ(sup.host("clean-host").actor("t").request<int>(Read{}).get(30s), 0);
    EXPECT_FALSE(sup.host("clean-host").exception());  // running
  }
  const auto reports = log.copy();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].exit_code, 0);
  EXPECT_FALSE(reports[0].exception);
}
