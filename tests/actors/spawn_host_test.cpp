// Hosts under the spawn start method: a fresh program image (this test
// binary run again; main calls mpx::freeze_support() first), from a parent
// that runs many threads. Its own binary: main must call freeze_support().
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "mpx/actors.hpp"
#include "square_actor.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;
using mpx::test::Square;

namespace {

struct Where {
  template <class A>
  void serialize(A&) {}
};
// What a spawned image knows about itself.
struct Facts {
  std::string start_method;
  bool main_went_on = false;  // main's own work ran in this process
  pid_t parent = 0;
  template <class A>
  void serialize(A& ar) {
    ar(start_method, main_went_on, parent);
  }
};

bool g_main_went_on = false;

ma::Behavior squarer(ma::Context&, int offset) {
  return {
      mpx::test::square_handler(offset),
      [](const Where&) {
        return Facts{mpx::test::start_method_name(mpx::get_start_method()), g_main_went_on, ::getppid()};
      },
  };
}
MPX_REGISTER_ACTOR(squarer);

ma::HostOptions spawned() { return ma::HostOptions().with_start_method(mpx::StartMethod::spawn); }

}  // namespace

int main(int argc, char** argv) {
  mpx::freeze_support();  // in a spawned host this runs the host and never returns
  g_main_went_on = true;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

TEST(SpawnHost, SpawnAndRequestFromAParentWithEightBusyThreads) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int i = 0; i < 8; ++i)
    busy.emplace_back([&stop] {
      std::vector<int> churn;
      while (!stop.load(std::memory_order_relaxed)) {
        churn.assign(1000, 1);
        churn.clear();
        churn.shrink_to_fit();
      }
    });
  {
    ma::Host h("spawn-host-a", spawned());
    auto sq = h.spawn("squarer", "sq", 1);
    EXPECT_EQ(sq.request<int>(Square{7}).get(30s), 50);
    auto facts = sq.request<Facts>(Where{}).get(30s);
    EXPECT_EQ(facts.start_method, "spawn");
    EXPECT_FALSE(facts.main_went_on) << "the spawned image ran main's own work";
    EXPECT_EQ(facts.parent, ::getpid());
    h.shutdown();
    EXPECT_EQ(h.exitcode(), 0);
  }
  stop = true;
  for (auto& t : busy) t.join();
}

TEST(SpawnHost, RestartUnderSpawnKeepsTheMailbox) {
  ma::Host h("spawn-restart", spawned());
  auto sq = h.spawn("squarer", "sq", 0);
  EXPECT_EQ(sq.request<int>(Square{3}).get(30s), 9);
  h.kill();
  h.join();
  h.restart();
  EXPECT_EQ(sq.request<int>(Square{4}).get(30s), 16);
  h.shutdown();
}

TEST(SpawnHost, ASupervisorRestartsASpawnedHostChild) {
  ma::Supervisor sup("spawn-sup", ma::SupervisorOptions(),
                     {ma::ChildSpec::host("spawn-sup-host", spawned(), {ma::ActorSpec::make("squarer", "sq", 5)})});
  auto sq = sup.host("spawn-sup-host").actor("sq");
  EXPECT_EQ(sq.request<int>(Square{2}).get(30s), 9);
  const pid_t first = sup.which_children()[0].pid;
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  // The request waits in the surviving mailbox or fails while the host is
  // down; the restarted host answers.
  int answer = -1;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (answer < 0 && std::chrono::steady_clock::now() < deadline) {
    try {
      answer = sq.request<int>(Square{3}).get(30s);
    } catch (const ma::ActorDown&) {
      std::this_thread::yield();
    }
  }
  EXPECT_EQ(answer, 14);
  EXPECT_NE(sup.which_children()[0].pid, first);
}
