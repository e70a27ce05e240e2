// Lock and RLock: mutual exclusion, timed waits, misuse errors, and the
// robust takeover when a holder dies (process killed, thread ended).
#include "mpx/lock.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "mpx/shared_memory.hpp"
#include "sync_test_util.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;
using mpx::test::Signal;

TEST(Lock, AcquireReleaseAndTryAcquire) {
  mpx::Lock lock;
  EXPECT_FALSE(lock.locked());
  lock.acquire();
  EXPECT_TRUE(lock.locked());
  EXPECT_FALSE(lock.try_acquire());
  lock.release();
  EXPECT_TRUE(lock.try_acquire());
  lock.release();
  {
    std::lock_guard g(lock);
    EXPECT_TRUE(lock.locked());
  }
  EXPECT_FALSE(lock.locked());
}

TEST(Lock, TimedAcquireGivesUpAfterTheTimeout) {
  mpx::Lock lock;
  lock.acquire();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(lock.acquire(150ms));
  double waited = mpx::test::seconds_since(t0);
  EXPECT_GE(waited, 0.14);
  EXPECT_LT(waited, 2.0);
  lock.release();
  EXPECT_TRUE(lock.acquire(0ms));
  lock.release();
}

TEST(Lock, ReleaseOfAnUnlockedLockIsAnError) {
  mpx::Lock lock;
  EXPECT_THROW(lock.release(), mpx::SyncError);
}

TEST(Lock, MovedFromHandleThrowsAClearError) {
  mpx::Lock a;
  mpx::Lock b = std::move(a);
  EXPECT_THROW(a.acquire(), mpx::SyncError);  // NOLINT(bugprone-use-after-move): on purpose
  EXPECT_THROW((void)a.acquire(10ms), mpx::SyncError);
  b.acquire();
  b.release();
}

TEST(Lock, CopiesShareOneLock) {
  mpx::Lock a;
  mpx::Lock b = a;
  EXPECT_TRUE(a.same_as(b));
  a.acquire();
  EXPECT_FALSE(b.try_acquire());
  b.release();  // Python's Lock may be released by anyone
  EXPECT_FALSE(a.locked());
}

TEST(Lock, ExcludesThreads) {
  mpx::Lock lock;
  long counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        std::lock_guard g(lock);
        ++counter;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, 80000);
}

TEST(Lock, HeldByAChildBlocksTheParentUntilReleased) {
  mpx::Lock lock;
  Signal held, release;
  Child child([&] {
    lock.acquire();
    held.notify();
    release.wait();
    lock.release();
    return 0;
  });
  ASSERT_EQ(held.wait(), 'x');
  EXPECT_FALSE(lock.try_acquire());
  EXPECT_FALSE(lock.acquire(50ms));
  release.notify();
  EXPECT_TRUE(lock.acquire(10s));
  lock.release();
  EXPECT_EQ(child.join(), 0);
}

TEST(Lock, HolderKilledIsReportedToTheNextAcquirerAndTheLockStaysUsable) {
  mpx::Lock lock;
  Signal held;
  Child child([&] {
    lock.acquire();
    held.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(held.wait(), 'x');
  // A waiter already blocked when the holder dies is told too.
  std::atomic<int> outcome{0};
  std::atomic<pid_t> waiter_tid{0};
  std::thread waiter([&] {
    waiter_tid = ::gettid();
    try {
      lock.acquire();
      outcome = 1;
    } catch (const mpx::OwnerDeadError& e) {
      outcome = e.dead_owner() == child.pid() ? 2 : 3;
    }
  });
  // Proven blocked: asleep in the lock's futex wait while the holder lives.
  // (No ASSERT before the join: a std::thread must not be left joinable.)
  const bool blocked = mpx::test::eventually([&] { return waiter_tid.load() != 0; }) &&
                       mpx::test::eventually_asleep_in_futex(::getpid(), waiter_tid);
  EXPECT_EQ(outcome.load(), 0) << "acquired a lock held by a live process";
  auto t0 = std::chrono::steady_clock::now();
  child.kill(SIGKILL);
  waiter.join();
  ASSERT_TRUE(blocked) << "the waiter never went to sleep in acquire()";
  EXPECT_LT(mpx::test::seconds_since(t0), 5.0);
  EXPECT_EQ(outcome.load(), 2);
  EXPECT_TRUE(lock.locked());  // the thread that was told holds it
  lock.release();
  // Usable afterwards, from this process and from another one.
  EXPECT_TRUE(lock.acquire(1s));
  lock.release();
  Child next([&] {
    if (!lock.acquire(5s)) return 1;
    lock.release();
    return 0;
  });
  EXPECT_EQ(next.join(), 0);
  EXPECT_EQ(child.join(), -SIGKILL);
}

TEST(Lock, DeadHolderNotYetReapedIsDetectedByAcquireStatus) {
  mpx::Lock lock;
  Signal held;
  Child child([&] {
    lock.acquire();
    held.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(held.wait(), 'x');
  child.kill(SIGKILL);
  // The child is a zombie until joined: it must count as dead.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(lock.acquire_status(10s), mpx::LockStatus::owner_died);
  EXPECT_LT(mpx::test::seconds_since(t0), 5.0);
  lock.release();
  EXPECT_EQ(child.join(), -SIGKILL);
}

TEST(Lock, TryAcquireTakesOverFromADeadHolder) {
  mpx::Lock lock;
  Child child([&] {
    lock.acquire();
    return 0;  // exits holding it
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_THROW((void)lock.try_acquire(), mpx::OwnerDeadError);
  EXPECT_TRUE(lock.locked());
  lock.release();
}

TEST(Lock, HolderThreadEndingCountsAsDead) {
  mpx::Lock lock;
  std::thread([&] { lock.acquire(); }).join();
  EXPECT_EQ(lock.acquire_status(5s), mpx::LockStatus::owner_died);
  lock.release();
}

TEST(Lock, PlacedInNamedSharedMemoryWorksAcrossAttachers) {
  auto shm = mpx::SharedMemory::create(4096);
  auto lock = mpx::Lock::create_at(shm, 64);
  lock.acquire();
  Signal attached;
  std::string name = shm.name();
  Child child([&] {
    mpx::SharedMemory mine(name);
    auto l = mpx::Lock::attach_at(mine, 64);
    if (l.try_acquire()) return 1;
    attached.notify();
    if (!l.acquire(10s)) return 2;
    l.release();
    return 0;
  });
  ASSERT_EQ(attached.wait(), 'x');
  lock.release();
  EXPECT_EQ(child.join(), 0);
  shm.unlink();
}

TEST(Lock, PlacementErrorsAreClear) {
  auto shm = mpx::SharedMemory::create(256);
  EXPECT_THROW((void)mpx::Lock::create_at(shm, 8), mpx::SyncError);     // misaligned
  EXPECT_THROW((void)mpx::Lock::create_at(shm, 256), mpx::SyncError);   // out of bounds
  EXPECT_THROW((void)mpx::Lock::attach_at(shm, 0), mpx::SyncError);     // nothing there
  auto lock = mpx::Lock::create_at(shm, 0);
  shm.close();
  EXPECT_THROW((void)mpx::Lock::attach_at(shm, 0), mpx::SyncError);     // closed: memory may be unmapped
  // The placed lock keeps the memory mapped: still usable after close().
  lock.acquire();
  lock.release();
  mpx::SharedMemory(shm.name()).unlink();
}

TEST(RLock, IsRecursiveAndOwnedByOneThread) {
  mpx::RLock lock;
  lock.acquire();
  lock.acquire();
  EXPECT_TRUE(lock.is_owned());
  EXPECT_EQ(lock.recursion_count(), 2u);
  std::thread([&] {
    EXPECT_FALSE(lock.try_acquire());
    EXPECT_THROW(lock.release(), mpx::SyncError);
  }).join();
  lock.release();
  lock.release();
  EXPECT_FALSE(lock.is_owned());
  EXPECT_THROW(lock.release(), mpx::SyncError);
}

TEST(RLock, HolderKilledIsReported) {
  mpx::RLock lock;
  Signal held;
  Child child([&] {
    lock.acquire();
    lock.acquire();
    held.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(held.wait(), 'x');
  child.kill(SIGKILL);
  try {
    lock.acquire();
    ADD_FAILURE() << "expected OwnerDeadError";
  } catch (const mpx::OwnerDeadError&) {
  }
  EXPECT_EQ(lock.recursion_count(), 1u);
  lock.release();
  EXPECT_FALSE(lock.is_owned());
  EXPECT_EQ(child.join(), -SIGKILL);
}
