// Condition::notify(n) wakes exactly n waiters (Python's rule), across
// processes; timed-out waiters do not absorb wake-ups; a dead lock owner is
// still reported to the waiter.
#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <vector>

#include "mpx/condition.hpp"
#include "mpx/sharedctypes.hpp"
#include "sync_test_util.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;

namespace {

// Shared counters, all read and written under the condition's lock.
enum Slot { kInWait, kReturned, kStop, kSlots };

// Runs `rounds` rounds against `waiters` processes that wait in a loop. Each
// round waits until every waiter is registered in wait() (they hold the lock
// until wait() has registered them), notifies, then waits until the
// notified ones are back in wait() and checks how many returned true.
void run_rounds(mpx::Condition& cv, mpx::Condition& progress, mpx::RawArray<int>& st, int waiters, int rounds,
                const std::vector<int>& ks) {
  for (int r = 0; r < rounds; ++r) {
    const int k = ks[static_cast<std::size_t>(r) % ks.size()];
    const int expect = k < 0 ? waiters : std::min(k, waiters);
    std::unique_lock g(cv);
    ASSERT_TRUE(progress.wait_for([&] { return st[kInWait] == waiters; }, 20s)) << "round " << r;
    st[kReturned] = 0;
    if (k < 0)
      cv.notify_all();
    else
      cv.notify(k);
    // The woken ones report and wait again; extra returns show up here too.
    ASSERT_TRUE(progress.wait_for([&] { return st[kReturned] >= expect && st[kInWait] == waiters; }, 20s))
        << "round " << r << ": notify(" << k << ") woke " << st[kReturned] << " of " << waiters;
    ASSERT_EQ(st[kReturned], expect) << "round " << r << ": notify(" << k << ") with " << waiters << " waiters";
  }
}

std::vector<std::unique_ptr<Child>> start_waiters(mpx::Condition& cv, mpx::Condition& progress,
                                                  mpx::RawArray<int>& st, int waiters) {
  std::vector<std::unique_ptr<Child>> children;
  for (int i = 0; i < waiters; ++i)
    children.push_back(std::make_unique<Child>([&] {
      std::unique_lock g(cv);
      while (st[kStop] == 0) {
        ++st[kInWait];
        progress.notify_all();
        bool notified = cv.wait(30s);
        --st[kInWait];
        if (!notified && st[kStop] == 0) return 1;  // nobody notified us for 30 s: the test is stuck
        if (notified) ++st[kReturned];
        progress.notify_all();
      }
      return 0;
    }));
  return children;
}

void stop_waiters(mpx::Condition& cv, mpx::RawArray<int>& st, std::vector<std::unique_ptr<Child>>& children) {
  {
    std::lock_guard g(cv);
    st[kStop] = 1;
    cv.notify_all();
  }
  for (auto& c : children) EXPECT_EQ(c->join(20s), 0);
}

template <class LockType>
void stress(int waiters, int rounds, const std::vector<int>& ks) {
  LockType lock;
  mpx::Condition cv(lock);
  mpx::Condition progress(lock);  // the main process waits on this one
  mpx::RawArray<int> st(kSlots);
  auto children = start_waiters(cv, progress, st, waiters);
  run_rounds(cv, progress, st, waiters, rounds, ks);
  stop_waiters(cv, st, children);
}

}  // namespace

TEST(ConditionExact, NotifyOneWakesExactlyOneAcrossProcesses) { stress<mpx::RLock>(5, 1500, {1}); }

TEST(ConditionExact, NotifyKAndNotifyAllWakeExactlyThatManyAcrossProcesses) {
  stress<mpx::RLock>(6, 1400, {2, 1, 3, -1, 5, 9, 0});
}

TEST(ConditionExact, ExactWithAPlainLockToo) { stress<mpx::Lock>(4, 900, {1, 2, -1}); }

TEST(ConditionExact, TimedOutWaitersDoNotAbsorbNotifications) {
  // Many waits that time out, then one notify(1) with two registered waiters:
  // exactly one returns true, the other times out. Stale counts from the
  // timeouts would hand the wake-up to nobody (zero woken) or to both.
  mpx::Condition cv;
  for (int i = 0; i < 200; ++i) {
    std::unique_lock g(cv);
    EXPECT_FALSE(cv.wait(0ms));
    EXPECT_FALSE(cv.wait(-5ms));
    EXPECT_FALSE(cv.wait(10us));
  }
  mpx::RawArray<int> st(3);  // [0] registered, [1] returned true, [2] returned false
  std::vector<std::unique_ptr<Child>> children;
  for (int i = 0; i < 2; ++i)
    children.push_back(std::make_unique<Child>([&] {
      std::unique_lock g(cv);
      ++st[0];
      bool notified = cv.wait(3s);
      ++st[notified ? 1 : 2];
      return 0;
    }));
  ASSERT_TRUE(mpx::test::eventually([&] {
    std::lock_guard g(cv);  // a waiter holds the lock until wait() registered it
    return st[0] == 2;
  }));
  {
    std::lock_guard g(cv);
    cv.notify(1);
  }
  for (auto& c : children) EXPECT_EQ(c->join(20s), 0);
  EXPECT_EQ(st[1], 1);
  EXPECT_EQ(st[2], 1);
}

TEST(ConditionExact, WaiterLearnsThatTheLockOwnerDied) {
  // The notifier dies holding the lock: the waiter re-acquires it, is told
  // by OwnerDeadError, and holds the lock.
  mpx::Lock lock;
  mpx::Condition cv(lock);
  mpx::test::Signal registered;
  Child notifier([&] {
    if (!registered.wait()) return 1;
    lock.acquire();  // the waiter released it inside wait()
    cv.notify();
    ::_exit(0);  // dies holding the lock
  });
  std::unique_lock g(cv);
  registered.notify();  // the child can only take the lock once wait() released it
  EXPECT_THROW((void)cv.wait(20s), mpx::OwnerDeadError);
  EXPECT_TRUE(lock.locked());
  g.unlock();  // the lock is ours after the takeover
  EXPECT_FALSE(lock.locked());
  EXPECT_EQ(notifier.join(20s), 0);
}
