// Hosts under the forkserver start method, from a parent that already runs
// many threads (as a backend service does). Its own binary: the fork server
// must be started before any thread.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "mpx/actors.hpp"
#include "square_actor.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;
using mpx::test::Square;

namespace {

struct Method {
  template <class A>
  void serialize(A&) {}
};

ma::Behavior squarer(ma::Context&, int offset) {
  return {
      mpx::test::square_handler(offset),
      [](const Method&) { return mpx::test::start_method_name(mpx::get_start_method()); },
  };
}
MPX_REGISTER_ACTOR(squarer);

bool g_forkserver = false;

}  // namespace

// The fork server starts first thing in main, before any thread, after
// static initialisation has registered every function and actor type.
int main(int argc, char** argv) {
  mpx::set_start_method(mpx::StartMethod::forkserver);
  g_forkserver = true;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

TEST(ForkserverHost, SpawnAndRequestFromAParentWithEightBusyThreads) {
  ASSERT_TRUE(g_forkserver);
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int i = 0; i < 8; ++i)
    busy.emplace_back([&stop] {
      std::vector<int> churn;
      while (!stop.load(std::memory_order_relaxed)) {  // allocates and frees: malloc locks are busy at fork time
        churn.assign(1000, 1);
        churn.clear();
        churn.shrink_to_fit();
      }
    });
  {
    ma::Host a("fs-host-a", ma::HostOptions().with_start_method(mpx::StartMethod::forkserver));
    ma::Host b("fs-host-b");  // the default start method is now forkserver
    auto sa = a.spawn("squarer", "sq", 1);
    auto sb = b.spawn("squarer", "sq", 2);
    EXPECT_EQ(sa.request<int>(Square{7}).get(30s), 50);
    EXPECT_EQ(sb.request<int>(Square{7}).get(30s), 51);
    a.shutdown();
    b.shutdown();
    EXPECT_EQ(a.exitcode(), 0);
    EXPECT_EQ(b.exitcode(), 0);
  }
  stop = true;
  for (auto& t : busy) t.join();
}

TEST(ForkserverHost, RestartUnderForkserverKeepsTheMailbox) {
  ma::Host h("fs-restart");
  auto sq = h.spawn("squarer", "sq", 0);
  EXPECT_EQ(sq.request<int>(Square{3}).get(30s), 9);
  h.kill();
  h.join();
  h.restart();
  EXPECT_EQ(sq.request<int>(Square{4}).get(30s), 16);
}
