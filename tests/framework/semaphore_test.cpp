// Semaphore and BoundedSemaphore: counting, timed waits, the bound, and
// "never more than k inside" across many processes.
#include "mpx/semaphore.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "mpx/sharedctypes.hpp"
#include "sync_test_util.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;

TEST(Semaphore, CountsDownAndUp) {
  mpx::Semaphore s(2);
  EXPECT_EQ(s.get_value(), 2u);
  EXPECT_TRUE(s.try_acquire());
  EXPECT_TRUE(s.try_acquire());
  EXPECT_FALSE(s.try_acquire());
  s.release(2);
  EXPECT_EQ(s.get_value(), 2u);
}

TEST(Semaphore, TimedAcquireGivesUp) {
  mpx::Semaphore s(0);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(s.acquire(100ms));
  EXPECT_GE(mpx::test::seconds_since(t0), 0.09);
}

TEST(Semaphore, ReleaseInAChildWakesTheParent) {
  mpx::Semaphore s(0);
  const pid_t parent = ::getpid(), waiter = ::gettid();
  Child child([&] {
    // Release only once the parent is asleep in the futex: the wake-up path.
    if (!mpx::test::eventually_asleep_in_futex(parent, waiter, 20s)) return 1;
    s.release();
    return 0;
  });
  EXPECT_TRUE(s.acquire(20s));
  EXPECT_EQ(child.join(), 0);
}

TEST(Semaphore, BadInputIsRefused) {
  EXPECT_THROW(mpx::Semaphore(mpx::Semaphore::max_value + 1u), mpx::SyncError);
  mpx::Semaphore s(mpx::Semaphore::max_value);
  EXPECT_THROW(s.release(), mpx::SyncError);
}

TEST(BoundedSemaphore, RefusesToGoAboveItsInitialValue) {
  mpx::BoundedSemaphore s(2);
  EXPECT_THROW(s.release(), mpx::SyncError);
  s.acquire();
  s.release();
  EXPECT_THROW(s.release(), mpx::SyncError);
  EXPECT_EQ(s.get_value(), 2u);
}

TEST(Semaphore, NeverAdmitsMoreThanKProcessesAtOnce) {
  constexpr int kProcesses = 6, kRounds = 300;
  constexpr std::uint32_t k = 2;
  mpx::Semaphore s(k);
  mpx::RawArray<int> counters(2);  // [0] inside now, [1] most ever seen inside
  std::vector<std::unique_ptr<Child>> children;
  for (int p = 0; p < kProcesses; ++p)
    children.push_back(std::make_unique<Child>([&] {
      for (int i = 0; i < kRounds; ++i) {
        if (!s.acquire(20s)) return 1;
        int inside = std::atomic_ref<int>(counters[0]).fetch_add(1) + 1;
        int seen = std::atomic_ref<int>(counters[1]).load();
        while (inside > seen && !std::atomic_ref<int>(counters[1]).compare_exchange_weak(seen, inside)) {
        }
        if (i % 8 == 0) std::this_thread::yield();
        std::atomic_ref<int>(counters[0]).fetch_sub(1);
        s.release();
      }
      return 0;
    }));
  for (auto& c : children) EXPECT_EQ(c->join(), 0);
  EXPECT_LE(counters[1], static_cast<int>(k));
  EXPECT_GE(counters[1], 1);
  EXPECT_EQ(counters[0], 0);
  EXPECT_EQ(s.get_value(), k);
}
