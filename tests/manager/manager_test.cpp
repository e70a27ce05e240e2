// The Manager (mpx/manager.hpp): every proxy kind, operations atomic across
// real processes, server-side code registered by name, and errors from the
// server reaching the caller typed.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>

#include "child_process.hpp"
#include "mpx/context.hpp"
#include "mpx/manager.hpp"
#include "mpx/queue.hpp"
#include "mpx/barrier.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;
using mpx::test::Signal;

namespace {

struct Counter {
  explicit Counter(int start) : n(start) {}
  int add(int k) { return n += k; }
  int value() const { return n; }
  void fail(std::string why) { throw std::invalid_argument(why); }
  int n;
};

const bool registered = [] {
  mpx::register_manager_function<int, int>("add", [](std::optional<int> v, int k) { return v.value_or(0) + k; });
  mpx::register_manager_function<std::string, std::string>(
      "concat", [](std::optional<std::string> v, std::string s) { return v.value_or("") + s; });
  mpx::ManagerType<Counter>("Counter")
      .constructor<int>()
      .method("add", &Counter::add)
      .method("value", &Counter::value)
      .method("fail", &Counter::fail);
  return true;
}();

}  // namespace

// A forkserver child gets its proxies as serialized arguments.
void forkserver_writer(mpx::DictProxy<std::string, int> d, mpx::ListProxy<int> l) {
  d.set("forkserver", static_cast<int>(::getpid()));
  l.append(1);
}
MPX_REGISTER_FUNCTION(forkserver_writer);

TEST(Manager, DictOperations) {
  mpx::Manager m;
  auto d = m.dict<std::string, int>();
  EXPECT_EQ(d.size(), 0u);
  d.set("b", 2);
  d.set("a", 1);
  d.set("b", 3);
  EXPECT_EQ(d.get("b"), 3);
  EXPECT_TRUE(d.contains("a"));
  EXPECT_FALSE(d.contains("zz"));
  EXPECT_EQ(d.find("zz"), std::nullopt);
  EXPECT_EQ(d.get("zz", 7), 7);
  EXPECT_THROW((void)d.get("zz"), mpx::KeyError);
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"b", "a"}));  // insertion order
  EXPECT_EQ(d.values(), (std::vector<int>{3, 1}));
  EXPECT_EQ(d.setdefault("a", 100), 1);
  EXPECT_EQ(d.setdefault("c", 100), 100);
  EXPECT_EQ(d.pop("c"), 100);
  EXPECT_THROW(d.pop("c"), mpx::KeyError);
  EXPECT_EQ(d.pop("c", -1), -1);
  d.update({{"x", 10}, {"a", 11}});
  EXPECT_EQ(d.items(), (std::vector<std::pair<std::string, int>>{{"b", 3}, {"a", 11}, {"x", 10}}));
  EXPECT_TRUE(d.erase("b"));
  EXPECT_FALSE(d.erase("b"));
  EXPECT_EQ(d.size(), 2u);
  d.clear();
  EXPECT_EQ(d.size(), 0u);
  try {
    (void)d.get("nope");
    FAIL() << "no KeyError";
  } catch (const mpx::RemoteError& e) {
    EXPECT_EQ(e.type(), "KeyError");
  }
}

TEST(Manager, ChildChangesAreSeenByTheParent) {
  mpx::Manager m;
  auto d = m.dict<std::string, int>();
  auto l = m.list<int>();
  Child child([&] {
    d.set("haha", 88);
    l.append(20);
    return 0;
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_EQ(d.items(), (std::vector<std::pair<std::string, int>>{{"haha", 88}}));
  EXPECT_EQ(l.snapshot(), std::vector<int>{20});
}

TEST(Manager, ApplyIsAnAtomicReadModifyWriteAcrossProcesses) {
  mpx::Manager m;
  auto d = m.dict<std::string, int>();
  auto v = m.Value<int>(0);
  constexpr int kChildren = 4, kEach = 300;
  std::vector<std::unique_ptr<Child>> children;
  for (int c = 0; c < kChildren; ++c) {
    children.push_back(std::make_unique<Child>([&] {
      for (int i = 0; i < kEach; ++i) {
        d.apply("add", std::string("hits"), 1);
        v.apply("add", 1);
      }
      return 0;
    }));
  }
  for (auto& c : children) ASSERT_EQ(c->join(), 0);
  EXPECT_EQ(d.get("hits"), kChildren * kEach);
  EXPECT_EQ(v.get(), kChildren * kEach);
  // A function of another value type cannot read the stored value: a RemoteError, nothing stored.
  EXPECT_THROW(d.apply("concat", std::string("hits"), std::string("x")), mpx::RemoteError);
  EXPECT_EQ(d.get("hits"), kChildren * kEach);
}

TEST(Manager, ApplyWithAnUnknownFunctionIsARemoteError) {
  mpx::Manager m;
  auto d = m.dict<std::string, int>();
  try {
    d.apply("no-such-function", std::string("k"), 1);
    FAIL() << "no error";
  } catch (const mpx::RemoteError& e) {
    EXPECT_NE(e.message().find("no-such-function"), std::string::npos) << e.what();
  }
}

TEST(Manager, ListOperations) {
  mpx::Manager m;
  auto l = m.list<std::string>({"a"});
  l.append("b");
  l.extend({"c", "d"});
  EXPECT_EQ(l.size(), 4u);
  EXPECT_EQ(l.get(0), "a");
  EXPECT_EQ(l.get(-1), "d");
  l.set(1, "B");
  EXPECT_EQ(l.pop(), "d");
  EXPECT_EQ(l.pop(0), "a");
  EXPECT_EQ(l.snapshot(), (std::vector<std::string>{"B", "c"}));
  EXPECT_THROW((void)l.get(5), mpx::IndexError);
  EXPECT_THROW(l.set(-3, "x"), mpx::IndexError);
  l.clear();
  EXPECT_THROW(l.pop(), mpx::IndexError);
}

TEST(Manager, NamespaceValueAndArray) {
  mpx::Manager m;
  auto ns = m.Namespace();
  ns.set("x", 1);
  ns.set("name", std::string("mpx"));
  EXPECT_EQ(ns.get<int>("x"), 1);
  EXPECT_EQ(ns.get<std::string>("name"), "mpx");
  EXPECT_TRUE(ns.has("x"));
  EXPECT_EQ(ns.names(), (std::vector<std::string>{"name", "x"}));
  try {
    (void)ns.get<int>("y");
    FAIL();
  } catch (const mpx::RemoteError& e) {
    EXPECT_EQ(e.type(), "AttributeError");
  }
  EXPECT_THROW((void)ns.get<double>("x"), mpx::DecodeError);  // typed get of another type

  auto v = m.Value<double>(0.0);
  auto a = m.Array<int>({0, 1, 2, 3});
  Child child([&] {
    v.set(3.14);
    a.set(0, 5);
    return 0;
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_EQ(v.get(), 3.14);
  EXPECT_EQ(a.snapshot(), (std::vector<int>{5, 1, 2, 3}));
  EXPECT_EQ(a.size(), 4u);
  EXPECT_THROW((void)a.get(4), mpx::IndexError);
}

TEST(Manager, LockExcludesOtherProcesses) {
  mpx::Manager m;
  auto lock = m.Lock();
  auto counter = m.Value<int>(0);
  std::vector<std::unique_ptr<Child>> children;
  for (int c = 0; c < 3; ++c) {
    children.push_back(std::make_unique<Child>([&] {
      for (int i = 0; i < 100; ++i) {
        std::lock_guard g(lock);
        counter.set(counter.get() + 1);  // two calls: only the lock makes it atomic
      }
      return 0;
    }));
  }
  for (auto& c : children) ASSERT_EQ(c->join(), 0);
  EXPECT_EQ(counter.get(), 300);
  EXPECT_THROW(lock.release(), mpx::SyncError);
  EXPECT_TRUE(lock.acquire(0s));
  EXPECT_FALSE(lock.acquire(20ms));
  EXPECT_FALSE(lock.try_acquire());
  lock.release();
}

TEST(Manager, RLockIsRecursiveAndOwnedByOneThread) {
  mpx::Manager m;
  auto r = m.RLock();
  ASSERT_TRUE(r.acquire());
  ASSERT_TRUE(r.acquire());
  std::thread other([&] {
    EXPECT_FALSE(r.acquire(20ms));
    EXPECT_THROW(r.release(), mpx::SyncError);
  });
  other.join();
  r.release();
  r.release();
  EXPECT_THROW(r.release(), mpx::SyncError);
}

TEST(Manager, SemaphoresAndEvent) {
  mpx::Manager m;
  auto s = m.Semaphore(2);
  EXPECT_TRUE(s.acquire());
  EXPECT_TRUE(s.acquire(0s));
  EXPECT_FALSE(s.acquire(20ms));
  s.release(2);
  EXPECT_EQ(s.get_value(), 2);
  auto b = m.BoundedSemaphore(1);
  EXPECT_THROW(b.release(), mpx::SyncError);

  auto e = m.Event();
  EXPECT_FALSE(e.wait(20ms));
  Child child([&] {
    e.set();
    return 0;
  });
  EXPECT_TRUE(e.wait(10s));
  EXPECT_TRUE(e.is_set());
  ASSERT_EQ(child.join(), 0);
  e.clear();
  EXPECT_FALSE(e.is_set());
}

TEST(Manager, ConditionWakesAWaiterInAnotherProcess) {
  mpx::Manager m;
  auto cond = m.Condition();
  auto ready = m.Value<bool>(false);
  auto waiting = m.Event();
  Child child([&] {
    cond.acquire();
    waiting.set();
    const bool ok = cond.wait_for([&] { return ready.get(); }, 10s);
    cond.release();
    return ok ? 0 : 1;
  });
  ASSERT_TRUE(waiting.wait(10s));
  cond.acquire();  // the child is in wait() (it released the lock), or about to call it
  ready.set(true);
  cond.notify_all();
  cond.release();
  EXPECT_EQ(child.join(), 0);
  EXPECT_THROW(cond.notify(), mpx::SyncError);  // without the lock
  cond.acquire();
  EXPECT_FALSE(cond.wait(20ms));
  cond.release();
}

TEST(Manager, BarrierReleasesAllPartiesAndBreaksOnTimeout) {
  mpx::Manager m;
  auto barrier = m.Barrier(3);
  std::vector<std::unique_ptr<Child>> children;
  for (int c = 0; c < 2; ++c) {
    children.push_back(std::make_unique<Child>([&] {
      const auto index = barrier.wait(10s);
      return index >= 0 && index < 3 ? 0 : 1;
    }));
  }
  const auto index = barrier.wait(10s);
  EXPECT_GE(index, 0);
  for (auto& c : children) EXPECT_EQ(c->join(), 0);
  EXPECT_EQ(barrier.parties(), 3);
  EXPECT_THROW(barrier.wait(20ms), mpx::BrokenBarrierError);
  EXPECT_TRUE(barrier.broken());
  barrier.reset();
  EXPECT_FALSE(barrier.broken());
}

TEST(Manager, QueueAndJoinableQueue) {
  mpx::Manager m;
  auto q = m.Queue<std::string>(2);
  q.put("a");
  q.put("b", 1s);
  EXPECT_TRUE(q.full());
  EXPECT_THROW(q.put_nowait("c"), mpx::Full);
  EXPECT_THROW(q.put("c", 20ms), mpx::Full);
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_EQ(q.get(), "a");
  EXPECT_EQ(q.get(1s), "b");
  EXPECT_TRUE(q.empty());
  EXPECT_THROW(q.get_nowait(), mpx::Empty);
  EXPECT_THROW(q.get(20ms), mpx::Empty);

  auto jq = m.JoinableQueue<int>();
  auto results = m.list<int>();
  for (int i = 0; i < 10; ++i) jq.put(i);
  Child consumer([&] {
    for (int i = 0; i < 10; ++i) {
      results.append(jq.get(10s) * 2);
      jq.task_done();
    }
    return 0;
  });
  EXPECT_TRUE(jq.join(10s));
  EXPECT_EQ(results.size(), 10u);
  EXPECT_EQ(consumer.join(), 0);
  EXPECT_THROW(jq.task_done(), mpx::QueueError);
}

TEST(Manager, BlockedGetIsWokenByAPutFromAnotherProcess) {
  mpx::Manager m;
  auto q = m.Queue<int>();
  Child producer([&] {
    q.put(42);
    return 0;
  });
  EXPECT_EQ(q.get(10s), 42);
  EXPECT_EQ(producer.join(), 0);
}

TEST(Manager, ProxiesWorkFromManyThreadsAtOnce) {
  mpx::Manager m;
  auto d = m.dict<int, int>();
  auto l = m.list<int>();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        d.set(t * 1000 + i, i);
        l.append(t);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(d.size(), 800u);
  EXPECT_EQ(l.size(), 800u);
}

TEST(Manager, CustomTypeLivesInTheServer) {
  mpx::Manager m;
  auto c = m.create("Counter", 5);
  EXPECT_EQ(c.call<int>("add", 2), 7);
  Child child([&] { return c.call<int>("add", 10) == 17 ? 0 : 1; });
  EXPECT_EQ(child.join(), 0);
  EXPECT_EQ(c.call<int>("value"), 17);
  try {
    c.call("fail", "bad input");
    FAIL() << "no RemoteError";
  } catch (const mpx::RemoteError& e) {
    EXPECT_EQ(e.type(), "std::invalid_argument");
    EXPECT_EQ(e.message(), "bad input");
  }
  EXPECT_EQ(c.call<int>("value"), 17);  // the server went on
  try {
    c.call("nope");
    FAIL();
  } catch (const mpx::RemoteError& e) {
    EXPECT_EQ(e.type(), "AttributeError");
  }
  try {
    (void)m.create("NoSuchType");
    FAIL();
  } catch (const mpx::RemoteError& e) {
    EXPECT_NE(e.message().find("NoSuchType"), std::string::npos);
  }
  // Arguments of the wrong type: the server's decoder refuses them.
  EXPECT_THROW(c.call<int>("add", 2.5), mpx::RemoteError);
}

TEST(Manager, ShutdownMakesEveryCallRaiseManagerGone) {
  mpx::Manager m;
  auto d = m.dict<int, int>();
  d.set(1, 1);
  const pid_t server = m.pid();
  ASSERT_GT(server, 0);
  m.shutdown();
  EXPECT_FALSE(m.running());
  EXPECT_THROW(d.set(1, 2), mpx::ManagerGoneError);
  EXPECT_THROW(d.set(1, 2), mpx::ManagerGoneError);  // and again, not a hang
  EXPECT_THROW((void)(m.dict<int, int>()), mpx::ManagerError);
}

TEST(Manager, DeferredStart) {
  mpx::Manager m(mpx::ManagerOptions{.address = {}, .authkey = {}, .start = false});
  EXPECT_FALSE(m.running());
  EXPECT_THROW((void)m.Lock(), mpx::ManagerError);
  m.start();
  EXPECT_THROW(m.start(), mpx::ManagerError);
  auto l = m.Lock();
  EXPECT_TRUE(l.acquire(1s));
}

TEST(Manager, ProxiesTravelAsArgumentsOfAForkserverChild) {
  mpx::Manager m;
  auto d = m.dict<std::string, int>();
  auto l = m.list<int>();
  auto ctx = mpx::get_context(mpx::StartMethod::forkserver);
  auto p = ctx.Process(forkserver_writer, d, l);
  p.start();
  ASSERT_TRUE(p.join(30s));
  ASSERT_EQ(p.exitcode(), 0);
  EXPECT_EQ(d.get("forkserver"), p.pid());
  EXPECT_EQ(l.snapshot(), std::vector<int>{1});
}

TEST(Manager, PublishedObjectsAreFoundByNameFromAnotherConnection) {
  mpx::Manager m({.address = "127.0.0.1:0", .authkey = "k"});
  auto q = m.Queue<int>();
  m.publish("jobs", q);
  auto remote = mpx::Manager::connect(m.address(), "k");
  auto found = remote.lookup<mpx::QueueProxy<int>>("jobs");
  found.put(5);
  EXPECT_EQ(q.get(1s), 5);
  EXPECT_THROW((void)remote.lookup<mpx::QueueProxy<int>>("nothing"), mpx::KeyError);
  // A looked-up proxy of the wrong kind is refused by the server on use.
  auto wrong = remote.lookup<mpx::DictProxy<int, int>>("jobs");
  EXPECT_THROW(wrong.set(1, 1), mpx::ManagerError);
}
