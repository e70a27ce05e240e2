// Queues and Pipe ends as arguments of forkserver and spawn children: the
// seed samples' patterns (02 a child puts into a queue, 03 two children send
// into one pipe, 15 a queue of user objects, 16 joinable-queue consumers, 28
// terminating a child blocked on a queue) with the same results as under
// fork, from a parent whose 8 other threads are busy. This program's main
// calls mpx::freeze_support() (spawn) and starts the fork server first.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mpx/mpx.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mpx/event.hpp"

using namespace std::chrono_literals;

namespace {

struct Order {
  int id = 0;
  std::string item;
  std::vector<double> prices;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, item, prices);
  }
  bool operator==(const Order&) const = default;
};

// Seed 02: a child puts into a queue the parent reads.
void put_greeting(mpx::Queue<std::string> q, int n) {
  for (int i = 0; i < n; ++i) q.put("hello " + std::to_string(i));
}
MPX_REGISTER_FUNCTION(put_greeting);

// Seed 03: several children send into the same pipe end.
void send_from(mpx::Connection end, int who, int n) {
  for (int i = 0; i < n; ++i) end.send(who * 1000 + i);
}
MPX_REGISTER_FUNCTION(send_from);

// Seed 15: user objects through a queue; and a large one through a spill block.
void put_orders(mpx::Queue<Order> q, int n) {
  for (int i = 0; i < n; ++i) q.put(Order{i, "item-" + std::to_string(i), std::vector<double>(i % 3 == 0 ? 100000 : 3, i)});
}
MPX_REGISTER_FUNCTION(put_orders);

// Seed 16: consumers of a joinable queue, answering on a result queue.
void consume(mpx::JoinableQueue<int> tasks, mpx::Queue<int> results) {
  for (;;) {
    int t = tasks.get();
    if (t < 0) {
      tasks.task_done();
      return;
    }
    results.put(t * t);
    tasks.task_done();
  }
}
MPX_REGISTER_FUNCTION(consume);

// Seed 28: blocks on an empty queue until terminated; says it is there first.
void block_on_queue(mpx::SimpleQueue<int> q, mpx::Event ready) {
  ready.set();
  (void)q.get();
}
MPX_REGISTER_FUNCTION(block_on_queue);

// Duplex: answers every request on the same end until it reads a negative one.
void echo_doubled(mpx::Connection end) {
  for (;;) {
    int v = end.recv<int>();
    if (v < 0) return;
    end.send(2 * v);
  }
}
MPX_REGISTER_FUNCTION(echo_doubled);

// Eight threads allocating all the time, for as long as it lives.
class BusyThreads {
 public:
  BusyThreads() {
    for (int t = 0; t < 8; ++t) {
      threads_.emplace_back([this] {
        std::vector<std::string> churn;
        while (!stop_.load(std::memory_order_relaxed)) {
          churn.assign(16, std::string(200, 'x'));
        }
      });
    }
  }
  ~BusyThreads() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }
  BusyThreads(const BusyThreads&) = delete;
  BusyThreads& operator=(const BusyThreads&) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

class QueuePipeArguments : public ::testing::TestWithParam<mpx::StartMethod> {
 protected:
  mpx::ProcessOptions options() const { return mpx::ProcessOptions().with_start_method(GetParam()); }
  BusyThreads busy_;
};

void join_zero(mpx::Process& p) {
  ASSERT_TRUE(p.join(60s)) << p.name() << " did not end";
  EXPECT_EQ(p.exitcode(), 0) << p.name();
}

TEST_P(QueuePipeArguments, Seed02AChildPutsIntoAQueue) {
  mpx::Queue<std::string> q;
  mpx::Process p(options(), put_greeting, q, 1000);
  p.start();
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(q.get(30s), "hello " + std::to_string(i));
  join_zero(p);
}

TEST_P(QueuePipeArguments, Seed03TwoChildrenSendIntoOnePipe) {
  auto [receiver, sender] = mpx::Pipe();
  mpx::Process a(options(), send_from, sender, 1, 500);
  mpx::Process b(options(), send_from, sender, 2, 500);
  a.start();
  b.start();
  std::vector<int> from_a, from_b;
  for (int i = 0; i < 1000; ++i) {
    auto v = receiver.recv<int>(30s);
    ASSERT_TRUE(v) << "message " << i << " did not arrive";
    (*v < 2000 ? from_a : from_b).push_back(*v);
  }
  join_zero(a);
  join_zero(b);
  ASSERT_EQ(from_a.size(), 500u);
  ASSERT_EQ(from_b.size(), 500u);
  EXPECT_TRUE(std::is_sorted(from_a.begin(), from_a.end()));  // each sender's order is kept
  EXPECT_TRUE(std::is_sorted(from_b.begin(), from_b.end()));
  // Both children have closed their copies: once ours is closed too, EOF.
  sender.close();
  EXPECT_THROW((void)receiver.recv<int>(30s), mpx::EOFError);
}

TEST_P(QueuePipeArguments, ADuplexEndAnswersRequests) {
  auto [mine, theirs] = mpx::Pipe();
  mpx::Process p(options(), echo_doubled, theirs);
  p.start();
  for (int i = 0; i < 50; ++i) {
    mine.send(i);
    ASSERT_EQ(mine.recv<int>(30s), 2 * i);
  }
  mine.send(-1);
  join_zero(p);
}

TEST_P(QueuePipeArguments, Seed15UserObjectsLargeOnesToo) {
  mpx::Queue<Order> q;
  mpx::Process p(options(), put_orders, q, 30);
  p.start();
  for (int i = 0; i < 30; ++i) {
    auto o = q.get(30s);
    ASSERT_EQ(o, (Order{i, "item-" + std::to_string(i), std::vector<double>(i % 3 == 0 ? 100000 : 3, i)}));
  }
  join_zero(p);
}

TEST_P(QueuePipeArguments, Seed16JoinableQueueConsumers) {
  mpx::JoinableQueue<int> tasks;
  mpx::Queue<int> results;
  std::vector<mpx::Process> consumers;
  for (int c = 0; c < 3; ++c) {
    consumers.emplace_back(options(), consume, tasks, results);
    consumers.back().start();
  }
  for (int i = 0; i < 300; ++i) tasks.put(i);
  for (int c = 0; c < 3; ++c) tasks.put(-1);
  ASSERT_TRUE(tasks.join(60s)) << "task_done in the children did not reach the parent's join";
  std::multiset<int> got;
  for (int i = 0; i < 300; ++i) got.insert(results.get(30s));
  std::multiset<int> expected;
  for (int i = 0; i < 300; ++i) expected.insert(i * i);
  EXPECT_EQ(got, expected);
  for (auto& c : consumers) join_zero(c);
}

TEST_P(QueuePipeArguments, Seed28TerminatingAChildBlockedOnAQueue) {
  mpx::SimpleQueue<int> q;
  mpx::Event ready;
  mpx::Process p(options(), block_on_queue, q, ready);
  p.start();
  ASSERT_TRUE(ready.wait(30s));
  EXPECT_TRUE(p.is_alive());
  p.terminate();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), -SIGTERM);
  q.put(7);  // the queue still works for the living
  EXPECT_EQ(q.get(30s), 7);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, QueuePipeArguments,
                         ::testing::Values(mpx::StartMethod::forkserver, mpx::StartMethod::spawn),
                         [](const auto& info) { return std::string(mpx::to_string(info.param)); });

TEST(QueuePipeArgumentsMisuse, AQueueInsideAMessageIsASyncError) {
  mpx::Queue<std::string> inner;
  EXPECT_THROW((void)mpx::encode(inner), mpx::SyncError);
  auto [a, b] = mpx::Pipe();
  EXPECT_THROW((void)mpx::encode(a), mpx::SyncError);
}

}  // namespace

int main(int argc, char** argv) {
  mpx::freeze_support();
  mpx::set_start_method(mpx::StartMethod::forkserver);  // the server, forked before any thread
  mpx::set_start_method(mpx::StartMethod::fork);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
