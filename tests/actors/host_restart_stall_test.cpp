// A host restart in progress must not stall the parent's gateway: while
// restart() is still starting the replacement process, the parent fails a
// request to the dead incarnation (which asks the Host for the old process'
// exit code) and takes replies from other hosts, and the Host's state
// getters answer. The restart is held deterministically in a fork prepare
// handler (pthread_atfork: it runs in restart()'s thread just before
// fork(), so restart() holds its locks there).
#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mpx/actors.hpp"
#include "mpx/event.hpp"
#include "square_actor.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;
using mpx::test::Square;

namespace {

struct Hang {  // a request that is never answered
  template <class A>
  void serialize(A&) {}
};
struct Tick {
  template <class A>
  void serialize(A&) {}
};
struct Flood {  // send `count` Ticks to `to`, then set g_flooded
  ma::ActorRef to;
  int count = 0;
  template <class A>
  void serialize(A& ar) {
    ar(to, count);
  }
};

// Made before the hosts start: shared with them by fork.
mpx::Event* g_flooded = nullptr;
// In this process: what the parent's own actor blocks on.
mpx::Event* g_hold = nullptr;
constexpr int kTicks = 2048;  // twice the parent's in-flight bound
std::atomic<int> g_ticks{0};
mpx::Event* g_all_ticks = nullptr;

ma::Behavior helper(ma::Context& self, int offset) {
  auto held = std::make_shared<std::vector<ma::ResponsePromise<int>>>();
  return {
      mpx::test::square_handler(offset),
      [&self, held](const Hang&) {
        held->push_back(self.make_response_promise<int>());
        return held->back();
      },
      [](const Flood& f) {
        for (int i = 0; i < f.count; ++i) f.to.send(Tick{});
        g_flooded->set();
      },
  };
}
MPX_REGISTER_ACTOR(helper);

// Lives in the parent: the first Tick blocks until g_hold, so the records
// the gateway hands over stay in flight.
ma::Behavior blocker(ma::Context&) {
  return {[](const Tick&) {
    (void)g_hold->wait(60s);
    if (g_ticks.fetch_add(1) + 1 == kTicks) g_all_ticks->set();
  }};
}
MPX_REGISTER_ACTOR(blocker);

// Holds the next fork of this process in its prepare handler.
struct ForkGate {
  std::atomic<bool> armed{false};
  mpx::Event reached;
  mpx::Event release;
};
std::atomic<ForkGate*> g_gate{nullptr};

void hold_fork() {
  ForkGate* gate = g_gate.load();
  if (!gate || !gate->armed.exchange(false)) return;
  gate->reached.set();
  (void)gate->release.wait(60s);  // bounded: a failing test must not hang
}

}  // namespace

TEST(HostRestartStall, TheParentsGatewayAnswersWhileARestartIsInProgress) {
  static const int registered = ::pthread_atfork(&hold_fork, nullptr, nullptr);
  ASSERT_EQ(registered, 0);
  ForkGate gate;
  mpx::Event flooded, hold, all_ticks;
  g_gate = &gate;
  g_flooded = &flooded;
  g_hold = &hold;
  g_all_ticks = &all_ticks;
  // Started by fork (the gate is a fork handler of this process).
  ma::Host a("stall-a", ma::HostOptions()
                            .with_start_method(mpx::StartMethod::fork)
                            .with_shutdown_timeout(1000ms));
  ma::Host c("stall-c", ma::HostOptions().with_start_method(mpx::StartMethod::fork));
  auto in_a = a.spawn("helper", "h", 0);
  auto in_c = c.spawn("helper", "h", 1);
  ASSERT_EQ(in_c.request<int>(Square{3}).get(30s), 10);
  auto blocker = ma::spawn("blocker", "blocker");

  struct Cleanup {  // also on failure: let a held restart and the blocker go on
    ForkGate& gate;
    mpx::Event& hold;
    ~Cleanup() {
      gate.armed = false;
      gate.release.set();
      hold.set();
      g_gate = nullptr;
    }
  } cleanup{gate, hold};

  // A request that the dead incarnation of `a` will never answer.
  auto hang = in_a.request<int>(Hang{});
  // Fill the parent's gateway: the blocker holds the in-flight bound (1024
  // by default) and the rest waits in the parent's mailbox, so that the
  // gateway cannot settle a death it sees until the blocker is released.
  in_c.send(Flood{blocker, kTicks});
  ASSERT_TRUE(flooded.wait(30s));
  a.kill();
  ASSERT_TRUE(a.join(30s));

  // While this thread is held in restart(), another checks what must go on.
  // (The restart runs here, not in a short-lived thread: a host dies with
  // the thread that started it.)
  std::atomic<bool> restarted{false};
  auto checker = std::async(std::launch::async, [&] {
    struct Release {  // also when an ASSERT returns early
      ForkGate& gate;
      ~Release() { gate.release.set(); }
    } release{gate};
    ASSERT_TRUE(gate.reached.wait(30s)) << "the restart did not reach fork()";
    // The restart is in progress (held in fork) from here on.
    hold.set();  // the gateway catches up and must fail `hang`
    const bool failed_in_time = hang.wait(10s);
    EXPECT_TRUE(failed_in_time) << "the request to the dead host was not failed while the host restarts";
    if (failed_in_time) {
      try {
        (void)hang.get(0s);
        ADD_FAILURE() << "the request to the dead host succeeded";
      } catch (const ma::ActorDown& e) {
        EXPECT_NE(std::string(e.what()).find("exit code -9"), std::string::npos) << e.what();
      }
    }
    auto other = in_c.request<int>(Square{4});
    EXPECT_TRUE(other.wait(10s)) << "a reply from another host stalled behind the restart";
    // The getters do not wait for the restart either.
    auto getters = std::async(std::launch::async, [&] { return std::make_pair(a.restarts(), a.pid()); });
    const bool prompt = getters.wait_for(10s) == std::future_status::ready;
    EXPECT_TRUE(prompt) << "Host::restarts()/pid() waited for the restart";
    EXPECT_FALSE(restarted.load()) << "the restart was not held";
    gate.release.set();
    EXPECT_EQ(getters.get().first, 1u);
    if (other.wait(30s)) {
      EXPECT_EQ(other.get(0s), 17);
    }
  });
  gate.armed = true;
  a.restart();
  restarted = true;
  checker.get();

  EXPECT_EQ(in_a.request<int>(Square{5}).get(30s), 25);
  EXPECT_EQ(a.restarts(), 1u);
  a.shutdown();
  c.shutdown();
  EXPECT_EQ(c.exitcode(), 0);
  EXPECT_TRUE(all_ticks.wait(30s)) << g_ticks.load() << " of " << kTicks << " Ticks handled";
}
