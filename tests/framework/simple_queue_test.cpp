// SimpleQueue: Python's minimal queue (put, get, empty, close) across processes.
#include <gtest/gtest.h>

#include <string>

#include "mpx/queue.hpp"
#include "queue_test_support.hpp"

using mpx::test::ForkedChild;

TEST(SimpleQueue, PutGetEmptyAcrossProcesses) {
  mpx::SimpleQueue<std::string> q;
  EXPECT_TRUE(q.empty());
  ForkedChild child([&] {
    q.put("one");
    q.put(std::string(10000, 'z'));
    return 0;
  });
  EXPECT_EQ(q.get(), "one");
  EXPECT_EQ(q.get(), std::string(10000, 'z'));
  EXPECT_EQ(child.wait(), 0);
  EXPECT_TRUE(q.empty());
}

TEST(SimpleQueue, CloseRefusesFurtherUse) {
  mpx::SimpleQueue<int> q;
  q.put(1);
  q.close();
  EXPECT_THROW(q.put(2), mpx::QueueClosed);
  EXPECT_THROW((void)q.get(), mpx::QueueClosed);
}
