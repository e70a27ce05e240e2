// HostOptions::standby: a host forks a standby process after each start;
// restart() hands the mailbox to it (the restarted process IS the former
// standby, checked by pid) and forks the next one. A standby that died or
// became stale (a named spawn since its fork) is ended and the restart is
// cold; shutdown and destruction end the standby and reap it.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "mpx/actors.hpp"
#include "supervisor_snapshots.hpp"
#include "tally_actor.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;

namespace {

using mpx::test::Bump;
using mpx::test::Read;
using mpx::test::WhoAmI;

ma::Behavior counter(ma::Context&, int start) { return mpx::test::tally_behavior(start); }
MPX_REGISTER_ACTOR(counter);

// A zombie still "exists" for kill(0): a reaped process does not.
bool reaped(pid_t pid) { return !mpx::test::pid_exists(pid); }

class StandbyHost : public ::testing::TestWithParam<mpx::StartMethod> {
 protected:
  ma::HostOptions options() const { return ma::HostOptions().with_standby().with_start_method(GetParam()); }
  std::string host_name(const std::string& what) const {
    return "sb-" + what + (GetParam() == mpx::StartMethod::fork ? "-f" : "-s");
  }
};

}  // namespace

TEST_P(StandbyHost, RestartHandsTheMailboxToTheStandbyAndForksTheNext) {
  ma::Host host(host_name("handover"), options(), {ma::ActorSpec::make("counter", "c", 100)});
  const pid_t first = host.pid();
  const pid_t standby = host.standby_pid();
  ASSERT_NE(standby, 0);
  EXPECT_NE(standby, first);
  EXPECT_TRUE(mpx::test::pid_exists(standby));
  auto c = host.actor("c");
  c.send(Bump{});
  EXPECT_EQ(c.request<int>(Read{}).get(30s), 101);
  EXPECT_EQ(c.request<int>(WhoAmI{}).get(30s), first);

  host.kill();
  host.join();
  for (int i = 0; i < 10; ++i) c.send(Bump{});  // wait in the mailbox
  host.restart();

  EXPECT_EQ(host.pid(), standby);  // no fork on the restart's path
  EXPECT_EQ(c.request<int>(WhoAmI{}).get(30s), standby);
  EXPECT_EQ(c.request<int>(Read{}).get(30s), 110);  // a fresh actor, every message sent while down
  const pid_t next = host.standby_pid();
  ASSERT_NE(next, 0);
  EXPECT_NE(next, standby);
  EXPECT_NE(next, first);

  // And again: the next standby takes over the second restart.
  host.kill();
  host.join();
  host.restart();
  EXPECT_EQ(host.pid(), next);
  EXPECT_EQ(c.request<int>(Read{}).get(30s), 100);
  EXPECT_EQ(host.restarts(), 2u);

  const pid_t last = host.standby_pid();
  ASSERT_NE(last, 0);
  host.shutdown();
  EXPECT_EQ(host.standby_pid(), 0);
  EXPECT_TRUE(reaped(last));
  EXPECT_TRUE(reaped(next));
}

TEST_P(StandbyHost, ANamedSpawnMakesTheStandbyStaleSoTheRestartIsCold) {
  ma::Host host(host_name("stale"), options(), {ma::ActorSpec::make("counter", "c", 0)});
  const pid_t stale = host.standby_pid();
  ASSERT_NE(stale, 0);
  (void)host.spawn("counter", "d", 7);  // the standby knows only "c"
  host.kill();
  host.join();
  host.restart();
  EXPECT_NE(host.pid(), stale);
  EXPECT_TRUE(reaped(stale));  // ended and reaped by the restart
  EXPECT_EQ(host.actor("d").request<int>(Read{}).get(30s), 7);
  EXPECT_EQ(host.actor("c").request<int>(Read{}).get(30s), 0);
  // The next standby knows both actors and takes the next restart.
  const pid_t fresh = host.standby_pid();
  ASSERT_NE(fresh, 0);
  host.kill();
  host.join();
  host.restart();
  EXPECT_EQ(host.pid(), fresh);
  EXPECT_EQ(host.actor("d").request<int>(Read{}).get(30s), 7);
}

TEST_P(StandbyHost, ADeadStandbyIsReplacedByAColdStart) {
  ma::Host host(host_name("dead"), options(), {ma::ActorSpec::make("counter", "c", 5)});
  const pid_t standby = host.standby_pid();
  ASSERT_NE(standby, 0);
  ASSERT_EQ(::kill(standby, SIGKILL), 0);
  host.kill();
  host.join();
  host.restart();
  EXPECT_NE(host.pid(), standby);
  EXPECT_TRUE(reaped(standby));
  EXPECT_EQ(host.actor("c").request<int>(Read{}).get(30s), 5);
  EXPECT_NE(host.standby_pid(), 0);
}

TEST_P(StandbyHost, StopKeepsTheStandbyAndDestructionEndsIt) {
  pid_t standby = 0;
  {
    ma::Host host(host_name("stop"), options(), {ma::ActorSpec::make("counter", "c", 1)});
    standby = host.standby_pid();
    ASSERT_NE(standby, 0);
    host.stop(5000ms);
    EXPECT_EQ(host.exitcode(), 0);
    EXPECT_EQ(host.standby_pid(), standby);
    host.restart();
    EXPECT_EQ(host.pid(), standby);
    EXPECT_EQ(host.actor("c").request<int>(Read{}).get(30s), 1);
    standby = host.standby_pid();
    ASSERT_NE(standby, 0);
  }
  EXPECT_TRUE(reaped(standby));
}

INSTANTIATE_TEST_SUITE_P(StartMethods, StandbyHost,
                         ::testing::Values(mpx::StartMethod::fork, mpx::StartMethod::forkserver),
                         [](const auto& info) { return info.param == mpx::StartMethod::fork ? "fork" : "forkserver"; });

namespace {
// The supervisor forks a restarted host's next standby 20 ms after the
// restart: waits (bounded) until it is there.
pid_t wait_for_standby(const ma::Supervisor& sup, const std::string& id) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pid_t pid = sup.host(id).standby_pid()) return pid;
    std::this_thread::sleep_for(2ms);
  }
  return 0;
}
}  // namespace

// A supervisor's host child with a standby: its SIGKILLed host is replaced
// by the standby, which handles what was sent meanwhile, twice.
TEST(StandbySupervisor, ASigkilledHostChildRestartsIntoItsStandby) {
  ma::Supervisor sup("sb-sup", ma::SupervisorOptions().with_intensity(10, 60000ms),
                     {ma::ChildSpec::host("sb-sup-worker", ma::HostOptions().with_standby(),
                                          {ma::ActorSpec::make("counter", "c", 0)})});
  auto c = sup.actor("sb-sup-worker", "c");
  ASSERT_EQ(c.request<int>(Read{}).get(30s), 0);
  for (int round = 1; round <= 2; ++round) {
    SCOPED_TRACE(round);
    const pid_t before = sup.which_children()[0].pid;
    const pid_t standby = wait_for_standby(sup, "sb-sup-worker");
    ASSERT_NE(standby, 0);
    ASSERT_EQ(::kill(before, SIGKILL), 0);
    for (int i = 0; i < 3; ++i) c.send(Bump{});
    auto restarted = mpx::test::wait_for_child(
        sup, {"sb-sup-worker"}, [&](const ma::ChildSnapshot& s) { return s.state == "running" && s.pid != before; });
    ASSERT_TRUE(restarted);
    EXPECT_EQ(restarted->pid, standby);
    EXPECT_EQ(c.request<int>(Read{}).get(30s), 3);
  }
  const pid_t next = wait_for_standby(sup, "sb-sup-worker");
  ASSERT_NE(next, 0);
  sup.stop();
  EXPECT_TRUE(reaped(next));
}
