// Faults of the manager: a client SIGKILLed while it holds a manager lock or
// waits in a request, the server killed or shut down under its clients, and a
// new server at the same address.
#include <gtest/gtest.h>

#include <signal.h>

#include <thread>

#include "child_process.hpp"
#include "mpx/listener.hpp"
#include "mpx/manager.hpp"
#include "mpx/queue.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;
using mpx::test::Signal;

TEST(ManagerFaults, ClientKilledHoldingALockReleasesItAndTheNextAcquirerIsTold) {
  mpx::Manager m;
  auto lock = m.Lock();
  auto d = m.dict<int, int>();
  Signal holding;
  Child victim([&] {
    lock.acquire();
    d.set(1, 1);
    holding.notify();
    for (;;) ::pause();
    return 0;
  });
  ASSERT_TRUE(holding.wait(10s));
  EXPECT_FALSE(lock.acquire(20ms));  // held by the victim
  victim.kill(SIGKILL);
  EXPECT_EQ(victim.join(), -SIGKILL);
  try {
    lock.acquire(10s);
    FAIL() << "the next acquirer was not told";
  } catch (const mpx::OwnerDeadError& e) {
    EXPECT_EQ(e.dead_owner(), victim.pid());
  }
  // The caller holds it now; it works as usual afterwards.
  EXPECT_FALSE(lock.try_acquire());
  lock.release();
  EXPECT_EQ(lock.acquire_status(1s), mpx::LockStatus::acquired);
  lock.release();
  EXPECT_EQ(d.get(1), 1);
}

TEST(ManagerFaults, ClientKilledInsideABlockingRequestDoesNotDisturbOthers) {
  mpx::Manager m;
  auto q = m.Queue<int>();
  auto barrier = m.Barrier(2);
  auto started = m.Event();
  Child victim([&] {
    started.set();
    (void)q.get();  // blocks on the server
    return 0;
  });
  ASSERT_TRUE(started.wait(10s));
  victim.kill(SIGKILL);
  EXPECT_EQ(victim.join(), -SIGKILL);
  // The dead client's request took nothing: the item goes to a live getter.
  q.put(7);
  EXPECT_EQ(q.get(10s), 7);
  // A party that dies inside Barrier.wait breaks the barrier for the others.
  auto in_wait = m.Event();
  Child party([&] {
    in_wait.set();
    (void)barrier.wait();
    return 0;
  });
  ASSERT_TRUE(in_wait.wait(10s));
  // Make sure the party is inside wait() on the server before it dies.
  for (int i = 0; i < 1000 && barrier.n_waiting() == 0; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(barrier.n_waiting(), 1);
  party.kill(SIGKILL);
  EXPECT_EQ(party.join(), -SIGKILL);
  EXPECT_THROW(barrier.wait(10s), mpx::BrokenBarrierError);
}

TEST(ManagerFaults, ServerKilledMakesEveryCallRaiseManagerGonePromptly) {
  mpx::Manager m;
  auto d = m.dict<int, int>();
  auto q = m.Queue<int>();
  d.set(1, 1);
  std::atomic<bool> blocked_call_gone{false};
  auto waiting = m.Event();
  std::thread blocked([&] {
    try {
      waiting.set();
      (void)q.get();  // blocks until the server dies
    } catch (const mpx::ManagerGoneError&) {
      blocked_call_gone = true;
    }
  });
  ASSERT_TRUE(waiting.wait(10s));
  ASSERT_EQ(::kill(m.pid(), SIGKILL), 0);
  const auto t0 = std::chrono::steady_clock::now();
  blocked.join();
  EXPECT_TRUE(blocked_call_gone);
  try {
    d.set(1, 2);
    FAIL() << "no error";
  } catch (const mpx::ManagerGoneError& e) {
    EXPECT_NE(std::string(e.what()).find("gone"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)d.get(1), mpx::ManagerGoneError);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  // Children that use proxies after the server died get the same error.
  Child child([&] {
    try {
      d.set(3, 3);
    } catch (const mpx::ManagerGoneError&) {
      return 0;
    }
    return 1;
  });
  EXPECT_EQ(child.join(), 0);
  m.shutdown();  // reaps the dead server, does not throw
}

TEST(ManagerFaults, RestartedServerAtTheSameAddressMakesOldProxiesStale) {
  std::string address;
  std::optional<mpx::DictProxy<int, int>> old_local;
  std::optional<mpx::DictProxy<int, int>> old_remote;
  {
    mpx::Manager first({.address = "127.0.0.1:0", .authkey = "k"});
    address = first.address();
    old_local = first.dict<int, int>();
    auto remote = mpx::Manager::connect(address, "k");
    old_remote = remote.dict<int, int>();
    old_remote->set(1, 1);
  }  // shut down
  mpx::Manager second({.address = address, .authkey = "k"});
  ASSERT_EQ(second.address(), address);
  // A proxy of the first server's local address: nobody is there any more.
  EXPECT_THROW(old_local->set(1, 1), mpx::ManagerGoneError);
  // A TCP proxy: its connection broke with the first server (ManagerGoneError);
  // the next call reaches the new server, which is another instance.
  EXPECT_THROW(old_remote->set(1, 2), mpx::ManagerGoneError);
  EXPECT_THROW(old_remote->set(1, 2), mpx::StaleProxyError);
  EXPECT_THROW((void)old_remote->get(1), mpx::StaleProxyError);
  // A fresh connect works.
  auto fresh = mpx::Manager::connect(address, "k").dict<int, int>();
  fresh.set(1, 3);
  EXPECT_EQ(fresh.get(1), 3);
}
