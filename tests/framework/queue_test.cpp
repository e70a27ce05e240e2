// mpx::Queue: Python's semantics (Full/Empty, timeouts, qsize/empty/full,
// close), values of any type and size across processes, delivery at exit,
// faults (processes killed inside put/get, terminated while blocked), and the
// 4x4 stress test.
#include "mpx/queue.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "queue_test_support.hpp"
#include "sync_test_util.hpp"

using mpx::test::ForkedChild;
using mpx::test::Signal;
using namespace std::chrono_literals;

namespace {
struct Point {
  std::string name;
  std::vector<double> coords;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, coords);
  }
  bool operator==(const Point&) const = default;
};
// A value whose load throws.
struct Bad {
  int v = 0;
  template <class A>
  void save(A& a) const {
    a(v);
  }
  template <class A>
  void load(A& a) {
    a(v);
    if (v < 0) throw std::runtime_error("negative");
  }
};
}  // namespace

TEST(Queue, PutGetInOrderSingleProcess) {
  mpx::Queue<int> q;
  for (int i = 0; i < 100; ++i) q.put(i);
  EXPECT_EQ(q.qsize(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(q.get(), i);
  EXPECT_TRUE(q.empty());
}

TEST(Queue, UserTypesAndHeterogeneousValues) {
  mpx::Queue<Point> q;
  q.put(Point{"p", {1.5, 2.5}});
  EXPECT_EQ(q.get(), (Point{"p", {1.5, 2.5}}));
  mpx::Queue<std::tuple<int, std::optional<int>, std::string>> h;
  h.put({42, std::nullopt, "hello"});
  EXPECT_EQ(h.get(), std::make_tuple(42, std::optional<int>{}, std::string("hello")));
}

TEST(Queue, FullAndEmptyExactlyWhenPythonRaisesThem) {
  mpx::Queue<int> q(2);
  EXPECT_EQ(q.maxsize(), 2u);
  EXPECT_THROW((void)q.get_nowait(), mpx::Empty);
  EXPECT_THROW((void)q.get(false), mpx::Empty);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW((void)q.get(100ms), mpx::Empty);
  EXPECT_THROW((void)q.get(true, 100ms), mpx::Empty);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 190ms);
  q.put(1);
  EXPECT_FALSE(q.full());
  q.put_nowait(2);
  EXPECT_TRUE(q.full());
  EXPECT_THROW(q.put_nowait(3), mpx::Full);
  EXPECT_THROW(q.put(3, false), mpx::Full);
  t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(q.put(3, 100ms), mpx::Full);
  EXPECT_THROW(q.put(3, true, 100ms), mpx::Full);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 190ms);
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_EQ(q.get_nowait(), 1);
  q.put(3, 1s);
  EXPECT_EQ(q.get(1s), 2);
  EXPECT_EQ(q.get(), 3);
  EXPECT_THROW((void)q.get(-1s), mpx::Empty);  // Python: a negative timeout does not wait
}

TEST(Queue, BlockedPutResumesWhenAConsumerTakesOne) {
  mpx::Queue<int> q(1);
  q.put(1);
  ForkedChild producer([&] {
    q.put(2, 20s);  // Full (exit code 99) if nobody makes room in time
    return 0;
  });
  // The put is blocked: asleep in the queue's futex, not returned.
  ASSERT_TRUE(mpx::test::eventually_asleep_in_futex(producer.pid())) << "put on a full queue did not block";
  EXPECT_FALSE(producer.wait(0ms).has_value()) << "put returned on a full queue";
  EXPECT_EQ(q.get(5s), 1);
  EXPECT_EQ(producer.wait(), 0);  // resumed by the get
  EXPECT_EQ(q.get(5s), 2);
}

TEST(Queue, ChildPutsParentGets) {
  mpx::Queue<std::string> q;
  ForkedChild child([&] {
    q.put("from child");
    return 0;
  });
  EXPECT_EQ(child.wait(), 0);
  EXPECT_EQ(q.get(5s), "from child");
}

TEST(Queue, ItemsPutJustBeforeExitAreDelivered) {
  mpx::Queue<std::string> q;
  ForkedChild child([&] {
    // 1000 items, 334 of them medium (4 KiB lanes) and 50 large (1 MiB lanes).
    for (int i = 0; i < 1000; ++i)
      q.put(std::to_string(i) + std::string(i % 20 == 0 ? 5000 : (i % 3 == 0 ? 3000 : 10), '.'));
    ::_exit(0);  // no flush, no destructors: nothing is buffered anyway
    return 0;
  });
  EXPECT_EQ(child.wait(), 0);
  for (int i = 0; i < 1000; ++i)
    EXPECT_EQ(q.get(1s), std::to_string(i) + std::string(i % 20 == 0 ? 5000 : (i % 3 == 0 ? 3000 : 10), '.'));
}

TEST(Queue, MessagesBeyondTheLanesSpillAndKeepTheirOrder) {
  // Once every lane is taken, messages over 48 bytes go to blocks of the
  // growth file instead of waiting (queue.hpp, "Unbounded"): no Full.
  mpx::QueueOptions o;
  o.tiny_lanes = 0;  // 100-byte items take the 4 KiB small lanes here
  o.mid_lanes = 0;
  o.small_lanes = 2;
  o.lanes = 1;
  mpx::Queue<std::string> q(0, o);
  for (int i = 0; i < 3; ++i) q.put(std::string(100, 'a' + i), 1s);  // two small lanes, then the large one
  EXPECT_NO_THROW(q.put_nowait(std::string(100, 'x')));              // spilled
  q.put("small", 1s);
  EXPECT_EQ(q.get(), std::string(100, 'a'));
  q.put(std::string(100, 'y'), 1s);
  EXPECT_EQ(q.get(), std::string(100, 'b'));
  EXPECT_EQ(q.get(), std::string(100, 'c'));
  EXPECT_EQ(q.get(), std::string(100, 'x'));
  EXPECT_EQ(q.get(), "small");
  EXPECT_EQ(q.get(), std::string(100, 'y'));
}

TEST(Queue, MessagesLargerThanALaneStreamThrough) {
  mpx::QueueOptions o;
  o.lane_bytes = 64 * 1024;
  o.lanes = 2;
  mpx::Queue<std::string> q(0, o);
  std::string big(5 << 20, 'x');
  for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i / 4096) % 26);
  ForkedChild producer([&] {
    q.put(big);
    q.put("after");
    return 0;
  });
  EXPECT_EQ(q.get(20s), big);
  EXPECT_EQ(q.get(5s), "after");
  EXPECT_EQ(producer.wait(), 0);
}

TEST(Queue, BothSidesMidMessageDoNotDeadlock) {
  // Two producers stream messages bigger than the lanes while two consumers
  // read them: every lane and the ring are contended, nothing stalls.
  mpx::QueueOptions o;
  o.lane_bytes = 16 * 1024;
  o.lanes = 2;
  o.capacity = 4;
  mpx::Queue<std::string> q(0, o);
  mpx::Queue<int> done;
  std::vector<std::unique_ptr<ForkedChild>> kids;
  for (int p = 0; p < 2; ++p)
    kids.push_back(std::make_unique<ForkedChild>([&, p] {
      for (int i = 0; i < 30; ++i) q.put(std::string(100'000 + i, static_cast<char>('a' + p)));
      return 0;
    }));
  for (int c = 0; c < 2; ++c)
    kids.push_back(std::make_unique<ForkedChild>([&] {
      int n = 0;
      for (;;) {
        auto s = q.get(20s);
        if (s == "stop") break;
        if (s.find_first_not_of(s[0]) != std::string::npos) return 2;
        ++n;
      }
      done.put(n);
      return 0;
    }));
  EXPECT_EQ(kids[0]->wait(60s), 0);
  EXPECT_EQ(kids[1]->wait(60s), 0);
  q.put("stop", 20s);  // timed: Full fails the test if the consumers are stuck
  q.put("stop", 20s);
  EXPECT_EQ(kids[2]->wait(60s), 0);
  EXPECT_EQ(kids[3]->wait(60s), 0);
  EXPECT_EQ(done.get(1s) + done.get(1s), 60);
}

TEST(Queue, CopiesShareTheQueueAndCloseIsPerProcess) {
  mpx::Queue<int> q;
  mpx::Queue<int> copy = q;
  copy.put(5);
  EXPECT_EQ(q.get(), 5);
  ForkedChild child([&] {
    q.close();  // closes the child's handle only
    try {
      q.put(1);
      return 1;
    } catch (const mpx::QueueClosed&) {
    }
    q.join_thread();
    return 0;
  });
  EXPECT_EQ(child.wait(), 0);
  EXPECT_FALSE(q.is_closed());
  q.put(6);
  q.close();
  q.join_thread();
  EXPECT_THROW(q.put(7), mpx::QueueClosed);
  EXPECT_THROW((void)copy.get(), mpx::QueueClosed);
}

TEST(Queue, DecodeErrorStillConsumesTheItem) {
  // A value whose load throws: get propagates the error and the queue moves on.
  mpx::Queue<Bad> q;
  q.put(Bad{-1});
  q.put(Bad{3});
  EXPECT_THROW((void)q.get(), mpx::DecodeError);
  EXPECT_EQ(q.get().v, 3);
}

// ---- faults

namespace {
Signal* g_signal = nullptr;
void notify_and_hang() {
  g_signal->notify();
  for (;;) ::pause();
}
}  // namespace

TEST(QueueFaults, TerminatingAReaderBlockedInGetLeavesTheQueueUsable) {
  mpx::Queue<std::string> q;
  Signal started;
  ForkedChild reader([&] {
    started.notify();
    for (;;) (void)q.get();
    return 0;
  });
  ASSERT_TRUE(started.wait());
  // Terminated while really blocked in get: asleep in the queue's futex.
  ASSERT_TRUE(mpx::test::eventually_asleep_in_futex(reader.pid())) << "the reader never blocked in get";
  reader.kill(SIGTERM);
  EXPECT_EQ(reader.wait(), -SIGTERM);
  q.put("still works", 5s);
  EXPECT_EQ(q.get(1s), "still works");
  ForkedChild other([&] { return q.get(5s) == "to another process" ? 0 : 1; });
  q.put("to another process", 5s);
  EXPECT_EQ(other.wait(), 0);
}

TEST(QueueFaults, ConsumerKilledInsideGetLosesOnlyTheItemItHeld) {
  mpx::Queue<int> q;
  for (int i = 0; i < 10; ++i) q.put(i);
  Signal inside;
  g_signal = &inside;
  ForkedChild victim([&] {
    mpx::detail::Ring::test_hook_after_claim_get = notify_and_hang;
    (void)q.get();
    return 1;
  });
  ASSERT_TRUE(inside.wait());
  victim.kill();
  EXPECT_EQ(victim.wait(), -SIGKILL);
  // Item 0 was in the dead consumer's hands; 1..9 reach another consumer
  // (Python's Queue loses all of them in this case).
  ForkedChild survivor([&] {
    for (int i = 1; i < 10; ++i)
      if (q.get(5s) != i) return 1;
    return 0;
  });
  EXPECT_EQ(survivor.wait(), 0);
  EXPECT_TRUE(q.empty());
}

TEST(QueueFaults, ProducerKilledInsidePutNeverBlocksTheOthers) {
  mpx::Queue<std::string> q(4);
  Signal inside;
  g_signal = &inside;
  ForkedChild victim([&] {
    mpx::detail::Ring::test_hook_after_claim_put = notify_and_hang;
    q.put("never published");
    return 1;
  });
  ASSERT_TRUE(inside.wait());
  ForkedChild producer([&] {
    for (int i = 0; i < 20; ++i) q.put("item " + std::to_string(i));
    return 0;
  });
  victim.kill();
  EXPECT_EQ(victim.wait(), -SIGKILL);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(q.get(5s), "item " + std::to_string(i));
  EXPECT_EQ(producer.wait(), 0);
  EXPECT_THROW((void)q.get(100ms), mpx::Empty);
}

TEST(QueueFaults, RandomKillsOfConsumersLoseAtMostOneItemEach) {
  mpx::Queue<std::int64_t> q(64);
  mpx::Queue<std::int64_t> got;
  constexpr std::int64_t kItems = 20000;
  ForkedChild producer([&] {
    for (std::int64_t i = 0; i < kItems; ++i) q.put(i);
    return 0;
  });
  int kills = 0;
  for (int round = 0; round < 5; ++round) {
    ForkedChild consumer([&] {
      for (;;) got.put(q.get());
      return 0;
    });
    ::usleep(2000 + round * 1000);
    consumer.kill();
    consumer.wait();
    ++kills;
  }
  ForkedChild last([&] {
    for (;;) {
      try {
        got.put(q.get(2s));
      } catch (const mpx::Empty&) {
        return 0;
      }
    }
  });
  EXPECT_EQ(producer.wait(60s), 0);
  EXPECT_EQ(last.wait(60s), 0);
  std::vector<int> seen(kItems, 0);
  std::int64_t n = 0;
  while (true) {
    try {
      ++seen[static_cast<std::size_t>(got.get_nowait())];
      ++n;
    } catch (const mpx::Empty&) {
      break;
    }
  }
  for (auto s : seen) ASSERT_LE(s, 1) << "duplicate delivery";
  // Each killed consumer held at most one item from q, and at most one item
  // it had taken but not yet put on `got`.
  EXPECT_GE(n, kItems - 2 * kills);
}

// The stress test: 4 producer and 4 consumer processes move 10 million items;
// every item arrives exactly once (sequence numbers). Takes ~1-20 s.
TEST(QueueStress, FourProducersFourConsumersTenMillionItemsExactlyOnce) {
  constexpr int kProducers = 4, kConsumers = 4;
  constexpr std::int64_t kPer = 2'500'000;
  constexpr std::int64_t kTotal = kPer * kProducers;
  mpx::Queue<std::int64_t> q(1024);
  // Each consumer marks what it got in a shared bitmap of counters.
  auto seen_map = mpx::detail::SharedMapping::anonymous(static_cast<std::size_t>(kTotal));
  auto* seen = static_cast<std::atomic<std::uint8_t>*>(seen_map.data());
  std::vector<std::unique_ptr<ForkedChild>> kids;
  for (int p = 0; p < kProducers; ++p)
    kids.push_back(std::make_unique<ForkedChild>([&, p] {
      for (std::int64_t i = 0; i < kPer; ++i) q.put(p * kPer + i);
      return 0;
    }));
  for (int c = 0; c < kConsumers; ++c)
    kids.push_back(std::make_unique<ForkedChild>([&] {
      std::vector<std::int64_t> last(kProducers, -1);
      for (;;) {
        std::int64_t v = q.get(60s);
        if (v < 0) return 0;
        if (v >= kTotal) return 2;
        seen[v].fetch_add(1, std::memory_order_relaxed);
        // Per-producer FIFO: one consumer sees each producer's items in order.
        auto& l = last[static_cast<std::size_t>(v / kPer)];
        if (v <= l) return 3;
        l = v;
      }
    }));
  for (int p = 0; p < kProducers; ++p) ASSERT_EQ(kids[p]->wait(300s), 0);
  for (int c = 0; c < kConsumers; ++c) q.put(-1, 60s);
  for (int c = 0; c < kConsumers; ++c) ASSERT_EQ(kids[kProducers + c]->wait(300s), 0);
  std::int64_t missing = 0, dup = 0;
  for (std::int64_t i = 0; i < kTotal; ++i) {
    auto s = seen[i].load();
    missing += s == 0;
    dup += s > 1;
  }
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(dup, 0);
}
