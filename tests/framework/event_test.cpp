// Event: flag semantics, timed waits, wake-ups across processes.
#include "mpx/event.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "mpx/shared_memory.hpp"
#include "sync_test_util.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;
using mpx::test::Signal;

TEST(Event, SetClearIsSet) {
  mpx::Event e;
  EXPECT_FALSE(e.is_set());
  e.set();
  EXPECT_TRUE(e.is_set());
  EXPECT_TRUE(e.wait());
  EXPECT_TRUE(e.wait(0ms));
  e.clear();
  EXPECT_FALSE(e.is_set());
}

TEST(Event, TimedWaitReturnsFalseAfterTheTimeout) {
  mpx::Event e;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(e.wait(200ms));
  double waited = mpx::test::seconds_since(t0);
  EXPECT_GE(waited, 0.19);
  EXPECT_LT(waited, 2.0);
}

TEST(Event, SetInTheParentWakesWaitingChildren) {
  mpx::Event e;
  Signal started;
  Child a([&] {
    started.notify();
    return e.wait(20s) && e.is_set() ? 0 : 1;
  });
  Child b([&] {
    started.notify();
    return e.wait() ? 0 : 1;
  });
  ASSERT_EQ(started.wait(), 'x');
  ASSERT_EQ(started.wait(), 'x');
  // Both really asleep in the futex before the set (the wake-up path, not the fast check).
  EXPECT_TRUE(mpx::test::eventually_asleep_in_futex(a.pid()));
  EXPECT_TRUE(mpx::test::eventually_asleep_in_futex(b.pid()));
  EXPECT_FALSE(a.wait(0ms).has_value()) << "returned from wait() before the set";
  EXPECT_FALSE(b.wait(0ms).has_value()) << "returned from wait() before the set";
  e.set();
  EXPECT_EQ(a.join(), 0);
  EXPECT_EQ(b.join(), 0);
}

TEST(Event, SetInAChildWakesTheParent) {
  mpx::Event e;
  const pid_t parent = ::getpid(), waiter = ::gettid();
  Child child([&] {
    // Set only once the parent is asleep in the futex: the wake-up path.
    if (!mpx::test::eventually_asleep_in_futex(parent, waiter, 20s)) return 1;
    e.set();
    return 0;
  });
  EXPECT_TRUE(e.wait(20s));
  EXPECT_EQ(child.join(), 0);
}

TEST(Event, PlacedInNamedSharedMemory) {
  auto shm = mpx::SharedMemory::create(128);
  auto e = mpx::Event::create_at(shm, 64);
  std::string name = shm.name();
  Child child([&] {
    mpx::SharedMemory mine(name);
    return mpx::Event::attach_at(mine, 64).wait(20s) ? 0 : 1;
  });
  e.set();
  EXPECT_EQ(child.join(), 0);
  EXPECT_THROW((void)mpx::Event::attach_at(shm, 0), mpx::SyncError);
  shm.unlink();
}

TEST(Event, MovedFromHandleThrows) {
  mpx::Event a;
  mpx::Event b(std::move(a));
  EXPECT_THROW((void)a.wait(1ms), mpx::SyncError);  // NOLINT(bugprone-use-after-move)
  EXPECT_FALSE(b.is_set());
}
