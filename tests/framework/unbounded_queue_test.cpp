// Queues that are unbounded when they say so (mpx/queue.hpp, "Unbounded";
// docs/queues-and-pipes.md): maxsize 0 takes items of any size in any
// number without a consumer, a bounded queue counts items whatever their
// size, a byte budget gives backpressure by bytes, and the memory of spilled
// items goes back to the system once they are read.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mpx/detail/ring.hpp"
#include "mpx/queue.hpp"
#include "queue_test_support.hpp"
#include "sync_test_util.hpp"

using mpx::detail::ByteSink;
using mpx::detail::Deadline;
using mpx::detail::Ring;
using mpx::detail::RingOptions;
using mpx::test::ForkedChild;
using namespace std::chrono_literals;

namespace {

// A queue whose ring the test can look at (core_ is protected).
template <class T>
struct InspectableQueue : mpx::Queue<T> {
  using mpx::Queue<T>::Queue;
  const Ring& ring() const { return this->core_->ring; }
};

// Memory the growth file (cell segments and spilled blocks) holds now: its
// allocated pages, whoever touched them.
std::int64_t growth_file_bytes(const Ring& ring) {
  struct stat st {};
  if (::fstat(ring.growth_fd(), &st) != 0) return -1;
  return static_cast<std::int64_t>(st.st_blocks) * 512;
}

// Item i of a stream: its number, padded to `size` bytes with a letter of it.
std::string item(std::int64_t i, std::size_t size) {
  std::string s = std::to_string(i) + ":";
  s.resize(size, static_cast<char>('a' + i % 26));
  return s;
}

}  // namespace

// The symptom: Queue<std::string> with no consumer raised Full after
// 1,088 puts of 100 bytes (then 1024 small lanes + 64 large ones; now 6,208
// lanes of four classes, QueueOptions).
TEST(UnboundedQueue, TakesFarMoreThanTheLaneCountOf100ByteItemsWithoutAConsumer) {
  mpx::Queue<std::string> q;
  for (int i = 0; i < 20000; ++i) ASSERT_NO_THROW(q.put_nowait(item(i, 100))) << "Full after " << i << " puts";
  EXPECT_EQ(q.qsize(), 20000u);
  for (int i = 0; i < 20000; ++i) ASSERT_EQ(q.get_nowait(), item(i, 100));
  EXPECT_THROW((void)q.get_nowait(), mpx::Empty);
}

// A default unbounded queue: 1,000,000 items of 100 bytes, then 10,000 of
// 64 KiB, put by a producer process with no consumer running; then a
// consumer in another process receives every one, in order; the memory
// they took is returned. (With grow_cells = false an unbounded queue holds
// `capacity` items: ReadmeClaims.UnboundedQueueWithoutGrowCellsHolds262144ItemsThenPutBlocks.)
TEST(UnboundedQueue, AMillionSmallAndTenThousand64KiBItemsWaitThenArriveInOrderAndTheirMemoryIsReturned) {
  constexpr std::int64_t kSmall = 1'000'000;
  constexpr std::int64_t kLarge = 10'000;
  constexpr std::size_t kLargeBytes = 64 * 1024;
  InspectableQueue<std::string> q(0, mpx::QueueOptions{});
  ForkedChild producer([&] {
    for (std::int64_t i = 0; i < kSmall; ++i) q.put_nowait(item(i, 100));
    for (std::int64_t i = 0; i < kLarge; ++i) q.put_nowait(item(i, kLargeBytes));
    return 0;
  });
  ASSERT_EQ(producer.join(120s), 0) << "the producer failed (Full?) or did not finish";
  EXPECT_EQ(q.qsize(), static_cast<std::size_t>(kSmall + kLarge));
  const std::int64_t full = growth_file_bytes(q.ring());
  std::printf("growth file with every item waiting: %.1f MiB, spilled %.1f MiB\n", full / 1048576.0,
              q.ring().spilled_bytes() / 1048576.0);
  EXPECT_GT(full, kLarge * static_cast<std::int64_t>(kLargeBytes)) << "where did the 64 KiB items go?";

  ForkedChild consumer([&] {
    for (std::int64_t i = 0; i < kSmall; ++i)
      if (q.get(10s) != item(i, 100)) return 10;
    for (std::int64_t i = 0; i < kLarge; ++i)
      if (q.get(10s) != item(i, kLargeBytes)) return 11;
    try {
      (void)q.get_nowait();
      return 12;  // one item too many
    } catch (const mpx::Empty&) {
    }
    return 0;
  });
  ASSERT_EQ(consumer.join(120s), 0) << "10: small item out of order, 11: large, 12: extra item";
  EXPECT_EQ(q.qsize(), 0u);
  EXPECT_EQ(q.ring().spilled_bytes(), 0u) << "a chunk of spilled items was not returned";
  const std::int64_t drained = growth_file_bytes(q.ring());
  std::printf("growth file after the drain: %.1f MiB\n", drained / 1048576.0);
  // What stays are the cell segments of the deepest backlog (64 bytes an item
  // past the first 262,144: see docs/queues-and-pipes.md, "Memory").
  EXPECT_LT(drained, full / 10) << "full " << full << " drained " << drained;
  EXPECT_LE(drained, (kSmall + kLarge) * 64);
}

// A bounded queue counts items against maxsize, whatever their size: 3,000
// items of 100 bytes fit in Queue(3000) (the lanes hold 1,088 of them).
TEST(UnboundedQueue, ABoundedQueueCountsItemsWhateverTheirSize) {
  mpx::Queue<std::string> q(3000);
  for (int i = 0; i < 3000; ++i) ASSERT_NO_THROW(q.put_nowait(item(i, 100 + i % 9000))) << i;
  EXPECT_TRUE(q.full());
  EXPECT_THROW(q.put_nowait("one more"), mpx::Full);
  EXPECT_THROW(q.put("one more", 50ms), mpx::Full);
  EXPECT_EQ(q.get_nowait(), item(0, 100));
  ASSERT_NO_THROW(q.put_nowait("room again"));
  for (int i = 1; i < 3000; ++i) ASSERT_EQ(q.get_nowait(), item(i, 100 + i % 9000));
  EXPECT_EQ(q.get_nowait(), "room again");
}

// QueueOptions::max_bytes: put blocks (timed: Full) while the bytes queued
// plus its own exceed the budget; a get makes room; an empty queue takes an
// item larger than the budget.
TEST(UnboundedQueue, AByteBudgetGivesBackpressureByBytes) {
  mpx::QueueOptions o;
  o.max_bytes = 10 * 1024;
  mpx::Queue<std::string> q(0, o);
  int fitted = 0;
  for (;; ++fitted) {
    try {
      q.put_nowait(item(fitted, 1000));
    } catch (const mpx::Full&) {
      break;
    }
    ASSERT_LT(fitted, 100) << "the budget never stopped a put";
  }
  EXPECT_GE(fitted, 9);   // 10 KiB / ~1 KiB encoded
  EXPECT_LE(fitted, 10);
  EXPECT_LE(q.queued_bytes(), o.max_bytes);
  EXPECT_THROW(q.put(item(99, 1000), 50ms), mpx::Full);
  EXPECT_EQ(q.qsize(), static_cast<std::size_t>(fitted)) << "a refused put left something behind";

  // A producer blocked on the budget completes when a consumer gets.
  ForkedChild producer([&] {
    q.put(item(fitted, 1000), 20s);
    return 0;
  });
  ASSERT_TRUE(mpx::test::eventually_asleep_in_futex(producer.pid())) << "the put did not block on the budget";
  EXPECT_EQ(q.get(5s), item(0, 1000));
  EXPECT_EQ(producer.join(20s), 0);
  for (int i = 1; i <= fitted; ++i) ASSERT_EQ(q.get(5s), item(i, 1000));
  EXPECT_EQ(q.queued_bytes(), 0u);

  const std::string huge(64 * 1024, 'h');  // larger than the budget: an empty queue takes it
  ASSERT_NO_THROW(q.put_nowait(huge));
  EXPECT_THROW(q.put_nowait("x"), mpx::Full);
  EXPECT_EQ(q.get_nowait(), huge);
  EXPECT_NO_THROW(q.put_nowait("x"));
}

// Items larger than a lane, and larger than a 64 MiB chunk, wait without a
// consumer (a streamed put used to block until one read).
TEST(UnboundedQueue, ItemsLargerThanALaneOrAChunkWaitWithoutAConsumer) {
  RingOptions o;
  o.capacity = 64;
  o.spill = true;
  o.grow = true;
  Ring ring = Ring::create(o);
  std::vector<std::size_t> sizes{5u << 20, (64u << 20) + 1, 150u << 20, 1000, 3u << 20};
  auto fill = [](std::size_t n, std::size_t k) {
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; i += 4096) v[i] = static_cast<std::byte>(i / 4096 + k);
    v.back() = static_cast<std::byte>(k);
    return v;
  };
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    auto m = fill(sizes[k], k);
    ASSERT_TRUE(ring.put(m, Deadline::never(), false)) << "item " << k << " of " << sizes[k] << " bytes";
  }
  EXPECT_GE(ring.spilled_bytes(), std::size_t{150} << 20);
  ForkedChild consumer([&] {
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      const auto want = fill(sizes[k], k);
      bool same = false;
      auto sink = [&](std::span<const std::byte> b) {
        same = b.size() == want.size() && std::memcmp(b.data(), want.data(), b.size()) == 0;
      };
      if (!ring.get(ByteSink(sink), Deadline::after(10s)) || !same) return 1 + static_cast<int>(k);
    }
    return 0;
  });
  EXPECT_EQ(consumer.join(60s), 0) << "item (exit code - 1) wrong or missing";
  EXPECT_EQ(ring.spilled_bytes(), 0u);
}

// Two producers and two consumers through the spilled path at once: every
// item exactly once, each producer's items in its order (chunk allocation,
// sealing and freeing race here).
TEST(UnboundedQueue, ConcurrentProducersAndConsumersThroughSpilledBlocksKeepEveryItemOnceInOrder) {
  constexpr int kPerProducer = 60'000;
  mpx::QueueOptions o;
  o.small_lanes = 4;  // few lanes: most items spill
  o.lanes = 2;
  mpx::Queue<std::string> q(0, o);
  mpx::Queue<std::int64_t> counts;
  std::vector<std::unique_ptr<ForkedChild>> kids;
  for (int p = 0; p < 2; ++p)
    kids.push_back(std::make_unique<ForkedChild>([&, p] {
      for (int i = 0; i < kPerProducer; ++i) q.put(std::to_string(p) + ":" + item(i, 49 + (i * 7919) % 20000));
      return 0;
    }));
  for (int c = 0; c < 2; ++c)
    kids.push_back(std::make_unique<ForkedChild>([&] {
      int last[2] = {-1, -1};
      std::int64_t n = 0;
      for (;;) {
        std::string s = q.get(30s);
        if (s == "stop") break;
        const int p = s[0] - '0';
        const int i = std::stoi(s.substr(2));
        if (i <= last[p]) return 2;  // out of order, or twice
        if (s.substr(2) != item(i, 49 + (i * 7919) % 20000)) return 3;  // torn
        last[p] = i;
        ++n;
      }
      counts.put(n);
      return 0;
    }));
  EXPECT_EQ(kids[0]->join(120s), 0);
  EXPECT_EQ(kids[1]->join(120s), 0);
  q.put("stop");
  q.put("stop");
  EXPECT_EQ(kids[2]->join(60s), 0) << "2: order, 3: torn item";
  EXPECT_EQ(kids[3]->join(60s), 0) << "2: order, 3: torn item";
  EXPECT_EQ(counts.get(5s) + counts.get(5s), 2 * kPerProducer);
}
