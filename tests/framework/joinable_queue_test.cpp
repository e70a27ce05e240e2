// JoinableQueue: task_done/join across processes, the over-call error, join(timeout).
#include <gtest/gtest.h>

#include <string>

#include "mpx/queue.hpp"
#include "queue_test_support.hpp"

using mpx::test::ForkedChild;
using namespace std::chrono_literals;

TEST(JoinableQueue, JoinReturnsOnceEveryItemIsDone) {
  mpx::JoinableQueue<int> q;
  for (int i = 0; i < 50; ++i) q.put(i);
  EXPECT_EQ(q.unfinished_tasks(), 50u);
  EXPECT_FALSE(q.join(50ms));
  ForkedChild worker([&] {
    for (int i = 0; i < 50; ++i) {
      if (q.get(5s) != i) return 1;
      q.task_done();
    }
    return 0;
  });
  ASSERT_TRUE(q.join(30s)) << q.unfinished_tasks() << " tasks still unfinished";  // timed: a failure, not a hang
  EXPECT_EQ(q.unfinished_tasks(), 0u);
  EXPECT_EQ(worker.wait(), 0);
}

TEST(JoinableQueue, TaskDoneMoreOftenThanPutThrows) {
  mpx::JoinableQueue<std::string> q;
  q.put("a");
  (void)q.get();
  q.task_done();
  EXPECT_THROW(q.task_done(), mpx::QueueError);
  EXPECT_TRUE(q.join(0s));
}

TEST(JoinableQueue, FailedPutDoesNotCountATask) {
  mpx::JoinableQueue<int> q(1);
  q.put(1);
  EXPECT_THROW(q.put_nowait(2), mpx::Full);
  EXPECT_EQ(q.unfinished_tasks(), 1u);
}

TEST(JoinableQueue, ManyWorkersEachTaskDoneOnce) {
  mpx::JoinableQueue<int> tasks;
  mpx::Queue<int> results;
  std::vector<std::unique_ptr<ForkedChild>> workers;
  for (int w = 0; w < 3; ++w)
    workers.push_back(std::make_unique<ForkedChild>([&] {
      for (;;) {
        int t = tasks.get(10s);
        if (t < 0) {
          tasks.task_done();
          return 0;
        }
        results.put(t * t);
        tasks.task_done();
      }
    }));
  for (int i = 0; i < 300; ++i) tasks.put(i);
  for (int w = 0; w < 3; ++w) tasks.put(-1);
  ASSERT_TRUE(tasks.join(30s));
  long sum = 0;
  for (int i = 0; i < 300; ++i) sum += results.get(1s);
  EXPECT_EQ(sum, 299L * 300 * 599 / 6);
  for (auto& w : workers) EXPECT_EQ(w->wait(), 0);
}
