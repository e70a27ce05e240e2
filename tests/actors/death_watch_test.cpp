// DeathWatch: the pidfd watch that lets an endpoint sweep as soon as a host
// it waits on exits (mpx/actors/detail/death_watch.hpp).
#include "mpx/actors/detail/death_watch.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "child_process.hpp"
#include "mpx/event.hpp"

namespace {

using namespace std::chrono_literals;
using mpx::actors::detail::DeathWatch;

// Counts on_death calls; waits for the n-th with a deadline.
struct Deaths {
  std::mutex mutex;
  std::condition_variable cv;
  int count = 0;
  void add() {
    std::lock_guard lock(mutex);
    ++count;
    cv.notify_all();
  }
  bool wait_for(int n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, timeout, [&] { return count >= n; });
  }
  int now() {
    std::lock_guard lock(mutex);
    return count;
  }
};

TEST(DeathWatch, AWatchedProcessThatIsKilledCallsOnDeath) {
  Deaths deaths;
  DeathWatch watch([&] { deaths.add(); });
  mpx::Event release;
  mpx::test::Child child([&] {
    return release.wait(60s) ? 0 : 1;
  });
  watch.watch(child.pid());
  watch.watch(child.pid());  // watched once
  EXPECT_EQ(deaths.now(), 0) << "on_death called while the process runs";
  child.kill();
  ASSERT_TRUE(deaths.wait_for(1, 10s)) << "the death of a watched process was not reported";
  EXPECT_EQ(child.join(), -SIGKILL);
  EXPECT_EQ(deaths.now(), 1);
}

TEST(DeathWatch, AProcessThatExitsNormallyIsReportedToo) {
  Deaths deaths;
  DeathWatch watch([&] { deaths.add(); });
  mpx::Event release;
  mpx::test::Child child([&] {
    return release.wait(60s) ? 3 : 1;
  });
  watch.watch(child.pid());
  release.set();
  ASSERT_TRUE(deaths.wait_for(1, 10s));
  EXPECT_EQ(child.join(), 3);
}

TEST(DeathWatch, APidThatIsAlreadyGoneIsReportedAtOnce) {
  Deaths deaths;
  DeathWatch watch([&] { deaths.add(); });
  mpx::test::Child child([] { return 0; });
  ASSERT_EQ(child.join(), 0);  // reaped: the pid names no process now (or a newcomer: then this test is moot)
  if (::kill(child.pid(), 0) == 0) GTEST_SKIP() << "pid " << child.pid() << " was reused at once";
  watch.watch(child.pid());
  EXPECT_EQ(deaths.now(), 1) << "watch() of a pid with no process must call on_death before it returns";
}

TEST(DeathWatch, EveryWatchedProcessIsReportedAndAWatchAfterADeathWorks) {
  Deaths deaths;
  DeathWatch watch([&] { deaths.add(); });
  mpx::Event release_a, release_b;
  mpx::test::Child a([&] {
    return release_a.wait(60s) ? 0 : 1;
  });
  mpx::test::Child b([&] {
    return release_b.wait(60s) ? 0 : 1;
  });
  watch.watch(a.pid());
  watch.watch(b.pid());
  release_a.set();
  ASSERT_TRUE(deaths.wait_for(1, 10s));
  EXPECT_EQ(a.join(), 0);
  release_b.set();
  ASSERT_TRUE(deaths.wait_for(2, 10s)) << "the second watched process was not reported";
  EXPECT_EQ(b.join(), 0);
}

}  // namespace
