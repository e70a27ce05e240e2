// Condition: waiting for a predicate across processes, timeouts, misuse.
#include "mpx/condition.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <vector>

#include "mpx/sharedctypes.hpp"
#include "sync_test_util.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;

TEST(Condition, WaitOrNotifyWithoutTheLockIsAnError) {
  mpx::Condition c;
  EXPECT_THROW(c.notify(), mpx::SyncError);
  EXPECT_THROW((void)c.wait(1ms), mpx::SyncError);
  mpx::Condition with_lock{mpx::Lock()};
  EXPECT_THROW(with_lock.notify_all(), mpx::SyncError);
}

TEST(Condition, TimedWaitReturnsFalseAndHoldsTheLockAgain) {
  mpx::RLock lock;
  mpx::Condition c(lock);
  std::unique_lock g(c);
  lock.acquire();  // recursion level 2: wait() must release both and restore them
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(c.wait(100ms));
  EXPECT_GE(mpx::test::seconds_since(t0), 0.09);
  EXPECT_EQ(lock.recursion_count(), 2u);
  lock.release();
  EXPECT_FALSE(c.wait_for([] { return false; }, 50ms));
}

TEST(Condition, ProducerAndConsumersAcrossProcesses) {
  constexpr int kConsumers = 3, kItems = 300;
  mpx::Condition c;
  mpx::RawArray<int> state(3);  // [0] items available, [1] produced so far, [2] consumed so far
  std::vector<std::unique_ptr<Child>> consumers;
  for (int i = 0; i < kConsumers; ++i)
    consumers.push_back(std::make_unique<Child>([&] {
      for (;;) {
        std::unique_lock g(c);
        if (!c.wait_for([&] { return state[0] > 0 || state[1] == kItems; }, 20s))
          return 1;
        if (state[0] == 0) return 0;  // all done
        --state[0];
        ++state[2];
      }
    }));
  for (int i = 0; i < kItems; ++i) {
    std::lock_guard g(c);
    ++state[0];
    ++state[1];
    c.notify();
  }
  {
    std::lock_guard g(c);
    c.notify_all();
  }
  // Consumers leave once everything was produced and nothing is left.
  for (auto& child : consumers) {
    int code = child->join(20s);
    if (code != 0) {
      std::lock_guard g(c);
      c.notify_all();
    }
    EXPECT_EQ(code, 0);
  }
  EXPECT_EQ(state[2], kItems);
}

TEST(Condition, NotifyAllWakesEveryWaiter) {
  mpx::Condition c(mpx::Lock{});
  mpx::RawValue<int> go(0);
  mpx::RawValue<int> waiting(0);
  std::vector<std::unique_ptr<Child>> children;
  for (int i = 0; i < 4; ++i)
    children.push_back(std::make_unique<Child>([&] {
      std::unique_lock g(c);
      ++*waiting;
      return c.wait_for([&] { return *go == 1; }, 20s) ? 0 : 1;
    }));
  ASSERT_TRUE(mpx::test::eventually([&] {
    std::lock_guard g(c);
    return *waiting == 4;
  }));
  {
    std::lock_guard g(c);
    *go = 1;
    c.notify_all();
  }
  for (auto& child : children) EXPECT_EQ(child->join(), 0);
}
