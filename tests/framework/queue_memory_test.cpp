// A queue's memory follows its use (docs/queues-and-pipes.md, "Memory"):
// no commit charge for the space it reserves, an idle queue small, a queue
// that never holds more than a few items small whatever it has carried. Also
// the ring's early lap starts ("jumps", ring.cpp) under traffic that crosses
// them: order, qsize and nothing lost.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "mpx/detail/ring.hpp"
#include "mpx/queue.hpp"
#include "proc_memory.hpp"
#include "queue_test_support.hpp"

using mpx::detail::ByteSink;
using mpx::detail::Deadline;
using mpx::detail::Ring;
using mpx::detail::RingOptions;
using mpx::test::committed;
using mpx::test::ForkedChild;
using mpx::test::killed;
using mpx::test::resident_shmem;
using mpx::test::stopped_at;
using namespace std::chrono_literals;

// resident_shmem() counts exactly the rings' touched pages here: nothing
// else in the test process maps shared memory.

namespace {

// The figure behind an assertion, for the log (docs quote these).
void report(const char* what, std::int64_t bytes) {
  ::testing::Test::RecordProperty(what, std::to_string(bytes));
  std::printf("[ measured ] %s: %lld KiB\n", what, static_cast<long long>(bytes / 1024));
}

constexpr std::int64_t KiB = 1024;
constexpr std::int64_t MiB = 1024 * KiB;

}  // namespace

// Committed_AS is system-wide and moves with everything else the machine
// runs: 200 queues make a difference of 17 GB before the fix (86 MB each)
// and of a few MB after it; the least of three tries removes most of the
// noise, and 2 MiB a queue (400 MiB in all) leaves room for the rest.
TEST(QueueMemory, ReservedSpaceIsNotCommitted) {
  constexpr int kQueues = 200;
  std::int64_t least = INT64_MAX;
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::int64_t before = committed();
    std::vector<mpx::Queue<std::string>> queues(kQueues);
    least = std::min(least, committed() - before);
  }
  report("commit charge per queue", least / kQueues);
  EXPECT_LT(least / kQueues, 2 * MiB) << "commit charge per queue: " << least / kQueues << " bytes";
}

TEST(QueueMemory, IdleQueueIsUnder64KiBResident) {
  const std::int64_t before = resident_shmem();
  mpx::Queue<std::string> q;
  const std::int64_t idle = resident_shmem() - before;
  report("idle queue resident", idle);
  EXPECT_LT(idle, 64 * KiB) << "idle queue resident: " << idle << " bytes";
  // One item of each kind (in a cell, in a 256-byte lane, in a large lane)
  // touches a page or so each.
  q.put("x");
  q.put(std::string(100, 'm'));
  q.put(std::string(100'000, 'l'));
  EXPECT_EQ(q.get(10s), "x");
  EXPECT_EQ(q.get(10s), std::string(100, 'm'));
  EXPECT_EQ(q.get(10s), std::string(100'000, 'l'));
  const std::int64_t used = resident_shmem() - before;
  report("resident after three items (48 B, 100 B, 100 kB)", used);
  EXPECT_LT(used, 256 * KiB) << "after three items: " << used << " bytes";
}

// The measurement: 2,000 and then 300,000 items of 100 bytes through
// a queue that holds at most a few at a time (4.5 MiB and 20.7 MiB before).
TEST(QueueMemory, ShallowQueueStaysSmallWhateverItCarries) {
  const std::int64_t before = resident_shmem();
  mpx::Queue<std::string> q;
  std::string item(100, 'a');
  auto carry = [&](int n, int depth) {
    for (int i = 0; i < n; i += depth) {
      for (int k = 0; k < depth; ++k) {
        item[0] = static_cast<char>('a' + (i + k) % 26);
        q.put(item);
      }
      for (int k = 0; k < depth; ++k) ASSERT_EQ(q.get(10s)[0], static_cast<char>('a' + (i + k) % 26));
    }
  };
  carry(2'000, 1);
  const std::int64_t after_2k = resident_shmem() - before;
  carry(300'000, 1);
  const std::int64_t after_300k = resident_shmem() - before;
  carry(300'000, 4);
  const std::int64_t after_depth4 = resident_shmem() - before;
  report("resident after 2,000 items of 100 B", after_2k);
  report("resident after 302,000 items of 100 B", after_300k);
  report("resident after 602,000 items of 100 B (up to 4 waiting)", after_depth4);
  EXPECT_LT(after_2k, 1 * MiB) << after_2k;
  EXPECT_LT(after_300k, 1 * MiB) << after_300k;
  EXPECT_LT(after_depth4, 1 * MiB) << after_depth4;
  EXPECT_TRUE(q.empty());
}

// Small (in-cell) items too: the cells in use stay the first ones.
TEST(QueueMemory, ShallowQueueOfSmallItemsStaysSmall) {
  const std::int64_t before = resident_shmem();
  mpx::Queue<std::int64_t> q;
  for (std::int64_t i = 0; i < 600'000; ++i) {
    q.put(i);
    ASSERT_EQ(q.get(10s), i);
  }
  const std::int64_t used = resident_shmem() - before;
  report("resident after 600,000 int64 items", used);
  EXPECT_LT(used, 256 * KiB) << used;
}

// Bursts deeper than the point where an empty ring starts its next lap, then
// drained, across processes: every item arrives once, in order, and qsize()
// is exact between bursts. With a capacity that is not a power of two too.
class QueueLaps : public ::testing::TestWithParam<std::size_t> {};

TEST_P(QueueLaps, BurstsAcrossLapStartsKeepOrderAndCount) {
  mpx::QueueOptions options;
  options.capacity = GetParam();
  mpx::Queue<std::int64_t> q(0, options);
  mpx::Queue<std::int64_t> acks;
  const std::vector<int> bursts{1, 1500, 3, 64, 2047, 700, 1, 5000, 999, 1025, 4000, 2};
  ForkedChild producer([&] {
    std::int64_t next = 0;
    for (int n : bursts) {
      for (int i = 0; i < n; ++i) q.put(next++, 10s);
      (void)acks.get(10s);  // the consumer drained this burst
    }
    return 0;
  });
  std::int64_t expect = 0;
  for (int n : bursts) {
    for (int i = 0; i < n; ++i) ASSERT_EQ(q.get(10s), expect++);
    EXPECT_EQ(q.qsize(), 0u);
    acks.put(0);
  }
  EXPECT_EQ(producer.join(), 0);
  EXPECT_TRUE(q.empty());
}

INSTANTIATE_TEST_SUITE_P(Capacities, QueueLaps, ::testing::Values(std::size_t{0}, std::size_t{5000}, std::size_t{1500}));

// qsize() counts items exactly across a lap start made while the queue was
// empty (in one process, so nothing is in flight when it is read).
TEST(QueueMemory, QsizeExactAcrossLapStarts) {
  mpx::Queue<std::int64_t> q;
  for (int round = 0; round < 50; ++round) {
    const int depth = 1 + round * 97 % 3000;
    for (int i = 0; i < depth; ++i) q.put(i);
    ASSERT_EQ(q.qsize(), static_cast<std::size_t>(depth));
    for (int i = 0; i < depth; ++i) ASSERT_EQ(q.get(10s), i);
    ASSERT_EQ(q.qsize(), 0u);
  }
}

// Two producers and two consumers with bursts: nothing lost or duplicated,
// each producer's items in its order.
TEST(QueueMemory, ManyProducersAndConsumersAcrossLapStarts) {
  mpx::Queue<std::int64_t> q;
  mpx::Queue<std::int64_t> results;
  constexpr std::int64_t kPer = 200'000;
  auto produce = [&](std::int64_t base) {
    return [&q, base] {
      for (std::int64_t i = 0; i < kPer; ++i) {
        q.put(base + i, 10s);
        if (i % 5000 == 0) ::usleep(200);  // let the queue run empty now and then
      }
      return 0;
    };
  };
  auto consume = [&] {
    std::int64_t last[2] = {-1, -1};
    std::int64_t count = 0;
    for (;;) {
      std::int64_t v = q.get(10s);
      if (v < 0) break;
      const int who = v >= 1'000'000'000 ? 1 : 0;
      const std::int64_t i = v - who * 1'000'000'000;
      if (i <= last[who]) return 3;  // out of order
      last[who] = i;
      ++count;
    }
    results.put(count, 10s);
    return 0;
  };
  ForkedChild c1(consume), c2(consume);
  ForkedChild p1(produce(0)), p2(produce(1'000'000'000));
  EXPECT_EQ(p1.join(), 0);
  EXPECT_EQ(p2.join(), 0);
  q.put(-1, 10s);
  q.put(-1, 10s);
  EXPECT_EQ(c1.join(), 0);
  EXPECT_EQ(c2.join(), 0);
  EXPECT_EQ(results.get(10s) + results.get(10s), 2 * kPer);
}

// A producer killed after claiming a cell as a lap start, before moving the
// indexes: the others move them for it at once, and a lap later the cell it
// still holds is recovered (after one liveness tick).
TEST(QueueMemory, ProducerKilledInsideALapStartStallsNothing) {
  RingOptions o;
  o.capacity = 4096;
  o.small_lanes = 0;
  o.lanes = 2;
  o.lane_bytes = 4096;
  Ring r = Ring::create(o);
  const std::vector<std::byte> item(8, std::byte{7});
  auto pass_one = [&] {
    if (!r.put(item, Deadline::after(5s))) return false;
    std::vector<std::byte> out;
    auto sink = [&](std::span<const std::byte> b) { out.assign(b.begin(), b.end()); };
    return r.get(ByteSink(sink), Deadline::after(5s)) && out == item;
  };
  for (int i = 0; i < 1024; ++i) ASSERT_TRUE(pass_one());  // empty at cell 1024: the next put starts a lap
  auto producer = stopped_at(Ring::test_hook_after_claim_jump, [&] { (void)r.put(item, Deadline::after(5s)); });
  ASSERT_TRUE(producer);
  ASSERT_TRUE(pass_one());  // while it hangs there
  ASSERT_TRUE(killed(*producer));
  for (int i = 0; i < 4096; ++i) ASSERT_TRUE(pass_one()) << i;  // through its cell again
  EXPECT_EQ(r.size(), 0u);
}
