// Barrier: rounds across processes never let anyone through early;
// timeouts, abort and reset break it as Python's does.
#include "mpx/barrier.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "mpx/sharedctypes.hpp"
#include "sync_test_util.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;

TEST(Barrier, PartiesAreValidated) {
  EXPECT_THROW(mpx::Barrier(0), mpx::SyncError);
  EXPECT_THROW(mpx::Barrier(70000), mpx::SyncError);
  mpx::Barrier one(1);
  EXPECT_EQ(one.wait(), 0u);
  EXPECT_EQ(one.wait(), 0u);
}

TEST(Barrier, NoProcessGetsThroughARoundEarly) {
  constexpr int kProcesses = 5, kRounds = 200;
  mpx::Barrier barrier(kProcesses);
  mpx::RawArray<int> arrived(kRounds);
  mpx::RawArray<int> indices(kRounds);  // sum of returned indices per round
  std::vector<std::unique_ptr<Child>> children;
  for (int p = 0; p < kProcesses; ++p)
    children.push_back(std::make_unique<Child>([&] {
      for (int round = 0; round < kRounds; ++round) {
        std::atomic_ref<int>(arrived[round]).fetch_add(1);
        auto index = barrier.wait(20s);
        std::atomic_ref<int>(indices[round]).fetch_add(static_cast<int>(index));
        // Everybody must have arrived at this round before anyone leaves it.
        if (std::atomic_ref<int>(arrived[round]).load() != kProcesses) return 1;
      }
      return 0;
    }));
  for (auto& c : children) EXPECT_EQ(c->join(), 0);
  for (int round = 0; round < kRounds; ++round) {
    EXPECT_EQ(arrived[round], kProcesses);
    EXPECT_EQ(indices[round], kProcesses * (kProcesses - 1) / 2) << "indices not distinct in round " << round;
  }
}

TEST(Barrier, ActionRunsOnceBeforeTheRelease) {
  mpx::RawValue<int> actions(0);
  mpx::Barrier barrier(3, [&] { ++*actions; });
  std::vector<std::unique_ptr<Child>> children;
  for (int p = 0; p < 2; ++p)
    children.push_back(std::make_unique<Child>([&] {
      barrier.wait(20s);
      return *actions == 1 ? 0 : 1;
    }));
  barrier.wait(20s);
  EXPECT_EQ(*actions, 1);
  for (auto& c : children) EXPECT_EQ(c->join(), 0);
}

TEST(Barrier, TimeoutBreaksItForEveryone) {
  mpx::Barrier barrier(3);
  Child child([&] {
    try {
      barrier.wait(20s);
    } catch (const mpx::BrokenBarrierError&) {
      return 0;
    }
    return 1;
  });
  ASSERT_TRUE(mpx::test::eventually([&] { return barrier.n_waiting() == 1; }));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(barrier.wait(100ms), mpx::BrokenBarrierError);
  EXPECT_GE(mpx::test::seconds_since(t0), 0.09);
  EXPECT_TRUE(barrier.broken());
  EXPECT_EQ(child.join(), 0);
  EXPECT_THROW(barrier.wait(), mpx::BrokenBarrierError);
  barrier.reset();
  EXPECT_FALSE(barrier.broken());
}

TEST(Barrier, AbortAndResetReleaseWaiters) {
  mpx::Barrier barrier(2);
  std::thread t([&] { EXPECT_THROW(barrier.wait(20s), mpx::BrokenBarrierError); });
  ASSERT_TRUE(mpx::test::eventually([&] { return barrier.n_waiting() == 1; }));
  barrier.abort();
  t.join();
  barrier.reset();
  std::thread u([&] { EXPECT_THROW(barrier.wait(20s), mpx::BrokenBarrierError); });
  ASSERT_TRUE(mpx::test::eventually([&] { return barrier.n_waiting() == 1; }));
  barrier.reset();
  u.join();
  std::thread v([&] { barrier.wait(20s); });
  barrier.wait(20s);
  v.join();
}
