// The byte-level ring under mpx::Queue: delivery of every size class, full
// and empty, many processes, and recovery from processes killed mid-message.
#include "mpx/detail/ring.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <memory>
#include <sched.h>
#include <signal.h>

#include <cstring>
#include <string>
#include <vector>

#include "queue_test_support.hpp"

using mpx::detail::Deadline;
using mpx::detail::Ring;
using mpx::detail::RingOptions;
using mpx::test::ForkedChild;
using mpx::test::give;
using mpx::test::killed;
using mpx::test::notify_and_hang;
using mpx::test::Signal;
using mpx::test::stopped_at;
using mpx::test::take;
using namespace std::chrono_literals;

namespace {

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 31 + seed) & 0xff);
  return v;
}

RingOptions small_options() {
  RingOptions o;
  o.capacity = 16;
  o.small_lanes = 0;
  o.lanes = 2;
  o.lane_bytes = 4096;
  return o;
}

}  // namespace

TEST(Ring, DeliversInlineAndLaneMessagesInOrder) {
  Ring r = Ring::create(small_options());
  auto a = pattern(0, 1), b = pattern(48, 2), c = pattern(49, 3), d = pattern(4096, 4);
  ASSERT_TRUE(give(r, a));
  ASSERT_TRUE(give(r, b));
  ASSERT_TRUE(give(r, c));
  ASSERT_TRUE(give(r, d));
  EXPECT_EQ(r.size(), 4u);
  EXPECT_EQ(take(r), a);
  EXPECT_EQ(take(r), b);
  EXPECT_EQ(take(r), c);
  EXPECT_EQ(take(r), d);
  EXPECT_EQ(r.size(), 0u);
}

TEST(Ring, EmptyAndFullWithoutBlocking) {
  Ring r = Ring::create(small_options());
  EXPECT_FALSE(take(r, Deadline::never(), false));
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(give(r, pattern(8, i), Deadline::never(), false));
  EXPECT_FALSE(give(r, pattern(8, 99), Deadline::never(), false));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(give(r, pattern(8, 99), Deadline::after(100ms)));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);
  EXPECT_EQ(take(r), pattern(8, 0));
  EXPECT_TRUE(give(r, pattern(8, 99), Deadline::never(), false));
}

TEST(Ring, NonPowerOfTwoCapacityWrapsManyLaps) {
  RingOptions o = small_options();
  o.capacity = 5;
  Ring r = Ring::create(o);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(give(r, pattern(1 + i % 40, i)));
    if (i % 3 == 0) {
      ASSERT_TRUE(give(r, pattern(100, i)));
    }
    ASSERT_EQ(take(r), pattern(1 + i % 40, i));
    if (i % 3 == 0) {
      ASSERT_EQ(take(r), pattern(100, i));
    }
  }
}

TEST(Ring, StreamsMessagesLargerThanALaneAcrossProcesses) {
  Ring r = Ring::create(small_options());
  auto big = pattern(1 << 20, 7);  // 256 times the lane
  ForkedChild producer([&] { return give(r, big, Deadline::after(20s)) && give(r, pattern(10, 1)) ? 0 : 1; });
  EXPECT_EQ(take(r, Deadline::after(20s)), big);
  EXPECT_EQ(take(r), pattern(10, 1));
  EXPECT_EQ(producer.wait(), 0);
}

TEST(Ring, StreamedPutTimesOutWithoutConsumerAndLeavesNothing) {
  Ring r = Ring::create(small_options());
  EXPECT_FALSE(give(r, pattern(3 * 4096, 1), Deadline::after(100ms)));
  // The aborted message is dropped by the consumer; the next one arrives.
  ASSERT_TRUE(give(r, pattern(5, 2)));
  EXPECT_EQ(take(r), pattern(5, 2));
  EXPECT_FALSE(take(r, Deadline::never(), false));
}

TEST(Ring, ManyProducersManyConsumersMixedSizes) {
  RingOptions o;
  o.capacity = 64;
  o.small_lanes = 4;
  o.small_lane_bytes = 512;
  o.lanes = 3;
  o.lane_bytes = 8192;
  Ring r = Ring::create(o);
  Ring results = Ring::create(RingOptions{});
  constexpr int kProducers = 3, kConsumers = 3, kPer = 3000;
  std::vector<std::unique_ptr<ForkedChild>> kids;
  for (int p = 0; p < kProducers; ++p) {
    kids.push_back(std::make_unique<ForkedChild>([&, p] {
      for (int i = 0; i < kPer; ++i) {
        std::size_t n = (i % 10 == 0) ? 20000 : (i % 3 == 0 ? 300 : 16);
        auto m = pattern(n, static_cast<unsigned>(i));
        std::uint32_t id = static_cast<std::uint32_t>(p * kPer + i);
        std::memcpy(m.data(), &id, 4);
        if (!give(r, m, Deadline::after(30s))) return 1;
      }
      return 0;
    }));
  }
  for (int c = 0; c < kConsumers; ++c) {
    kids.push_back(std::make_unique<ForkedChild>([&] {
      for (;;) {
        auto m = take(r, Deadline::after(30s));
        if (!m) return 2;
        if (m->size() == 1) return 0;  // poison pill
        std::uint32_t id;
        std::memcpy(&id, m->data(), 4);
        int i = static_cast<int>(id % kPer);
        std::size_t n = (i % 10 == 0) ? 20000 : (i % 3 == 0 ? 300 : 16);
        auto expect = pattern(n, static_cast<unsigned>(i));
        std::memcpy(expect.data(), &id, 4);
        if (*m != expect) return 3;
        std::vector<std::byte> idb(4);
        std::memcpy(idb.data(), &id, 4);
        if (!give(results, idb)) return 4;
      }
    }));
  }
  for (int p = 0; p < kProducers; ++p) ASSERT_EQ(kids[p]->wait(60s), 0);
  for (int c = 0; c < kConsumers; ++c) ASSERT_TRUE(give(r, pattern(1, 0)));
  for (int c = 0; c < kConsumers; ++c) ASSERT_EQ(kids[kProducers + c]->wait(60s), 0);
  std::vector<int> seen(kProducers * kPer, 0);
  while (auto m = take(results, Deadline::never(), false)) {
    std::uint32_t id;
    std::memcpy(&id, m->data(), 4);
    ++seen[id];
  }
  for (int i = 0; i < kProducers * kPer; ++i) ASSERT_EQ(seen[i], 1) << "item " << i;
}

// ---- faults: a process SIGKILLed between claim and publish/release
// (stopped_at() and killed() in queue_test_support.hpp).

TEST(RingFaults, ProducerKilledAfterClaimIsSkipped) {
  Ring r = Ring::create(small_options());
  auto producer = stopped_at(Ring::test_hook_after_claim_put, [&] { (void)give(r, pattern(8, 1)); });
  ASSERT_TRUE(producer);
  ASSERT_TRUE(give(r, pattern(8, 2)));  // queued behind the dead claim
  ASSERT_TRUE(killed(*producer));
  EXPECT_EQ(take(r, Deadline::after(5s)), pattern(8, 2));
  EXPECT_FALSE(take(r, Deadline::never(), false));
}

TEST(RingFaults, ProducerKilledWhileZombieIsStillDetected) {
  Ring r = Ring::create(small_options());
  // A lane message.
  auto producer = stopped_at(Ring::test_hook_after_claim_put, [&] { (void)give(r, pattern(60, 1)); });
  ASSERT_TRUE(producer);
  ASSERT_TRUE(give(r, pattern(60, 2)));
  producer->kill();  // not reaped yet: a zombie while we read
  EXPECT_EQ(take(r, Deadline::after(5s)), pattern(60, 2));
  EXPECT_EQ(producer->wait(), -SIGKILL);
}

TEST(RingFaults, ConsumerKilledAfterClaimLosesOnlyItsItem) {
  RingOptions o = small_options();
  o.capacity = 2;
  Ring r = Ring::create(o);
  ASSERT_TRUE(give(r, pattern(8, 1)));
  ASSERT_TRUE(give(r, pattern(8, 2)));
  auto consumer = stopped_at(Ring::test_hook_after_claim_get, [&] { (void)take(r); });
  ASSERT_TRUE(consumer);
  ASSERT_TRUE(killed(*consumer));
  // The ring is full (item 2, and item 1's cell held by the dead consumer):
  // the next put recovers the dead consumer's cell.
  ASSERT_TRUE(give(r, pattern(8, 3), Deadline::after(5s)));
  EXPECT_EQ(take(r), pattern(8, 2));
  EXPECT_EQ(take(r), pattern(8, 3));
  EXPECT_FALSE(take(r, Deadline::never(), false));
}

TEST(RingFaults, ConsumerKilledWhileHoldingALaneFreesTheLane) {
  RingOptions o = small_options();
  o.lanes = 1;
  Ring r = Ring::create(o);
  ASSERT_TRUE(give(r, pattern(1000, 1)));
  auto consumer = stopped_at(Ring::test_hook_after_claim_get, [&] { (void)take(r); });
  ASSERT_TRUE(consumer);
  ASSERT_TRUE(killed(*consumer));
  // The only lane was held by the dead consumer; the next large put recovers it.
  ASSERT_TRUE(give(r, pattern(1000, 2), Deadline::after(5s)));
  EXPECT_EQ(take(r), pattern(1000, 2));
}

TEST(RingFaults, ConsumerKilledWhileHoldingASmallLaneFreesIt) {
  RingOptions o = small_options();
  o.small_lanes = 1;
  o.small_lane_bytes = 2048;
  o.lanes = 1;
  Ring r = Ring::create(o);
  ASSERT_TRUE(give(r, pattern(1000, 1)));  // the small lane
  auto consumer = stopped_at(Ring::test_hook_after_claim_get, [&] { (void)take(r); });
  ASSERT_TRUE(consumer);
  ASSERT_TRUE(killed(*consumer));
  ASSERT_TRUE(give(r, pattern(1000, 2), Deadline::after(5s)));  // the large lane
  ASSERT_TRUE(give(r, pattern(1000, 3), Deadline::after(5s)));  // needs the dead consumer's small lane
  EXPECT_EQ(take(r), pattern(1000, 2));
  EXPECT_EQ(take(r), pattern(1000, 3));
}

TEST(Ring, MediumMessagesUseTheSmallLanes) {
  RingOptions o;
  o.capacity = 4096;
  o.small_lanes = 1000;
  o.small_lane_bytes = 1024;
  o.lanes = 1;
  o.lane_bytes = 4096;
  Ring r = Ring::create(o);
  for (int i = 0; i < 1001; ++i) ASSERT_TRUE(give(r, pattern(500, i), Deadline::never(), false)) << i;
  EXPECT_FALSE(give(r, pattern(500, 0), Deadline::never(), false));  // 1000 small + 1 large lane in use
  for (int i = 0; i < 1001; ++i) ASSERT_EQ(take(r), pattern(500, i));
}

TEST(RingFaults, ProducerKilledMidStreamIsDropped) {
  Ring r = Ring::create(small_options());
  auto producer = stopped_at(Ring::test_hook_mid_stream_put, [&] { (void)give(r, pattern(5 * 4096, 1)); });
  ASSERT_TRUE(producer);
  ASSERT_TRUE(give(r, pattern(8, 2)));
  ASSERT_TRUE(killed(*producer));
  EXPECT_EQ(take(r, Deadline::after(5s)), pattern(8, 2));
}

TEST(RingFaults, ConsumerKilledMidStreamReleasesTheProducer) {
  Ring r = Ring::create(small_options());
  // The consumer reaches mid-stream only once the producer streams: start
  // both before waiting, so stopped_at() does not fit here.
  Signal mid;
  mpx::test::hang_signal = &mid;
  ForkedChild consumer([&] {
    Ring::test_hook_mid_stream_get = notify_and_hang;
    (void)take(r, Deadline::after(20s));
    return 1;
  });
  ForkedChild producer([&] { return give(r, pattern(8 * 4096, 1), Deadline::never()) ? 0 : 1; });
  ASSERT_TRUE(mid.wait());
  ASSERT_TRUE(killed(consumer));
  EXPECT_EQ(producer.wait(10s), 0);  // returns: its message died with the consumer
  ASSERT_TRUE(give(r, pattern(3000, 3), Deadline::after(5s)));
  EXPECT_EQ(take(r), pattern(3000, 3));
}

// ---- grow rings (RingOptions::grow): `capacity` base cells, then segments.

namespace {

RingOptions grow_options(std::size_t base_cells) {
  RingOptions o;
  o.capacity = base_cells;
  o.small_lanes = 0;
  o.lanes = 2;
  o.lane_bytes = 4096;
  o.spill = true;
  o.grow = true;
  return o;
}

std::vector<std::byte> numbered(std::uint64_t n) {
  std::vector<std::byte> v(sizeof n);
  std::memcpy(v.data(), &n, sizeof n);
  return v;
}

// Mappings of a growth file in this process (cell segments, chunks).
int growth_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) n += line.find("mpx-queue-growth") != std::string::npos;
  return n;
}

std::uint64_t number_of(const std::vector<std::byte>& v) {
  std::uint64_t n = ~std::uint64_t{0};
  if (v.size() == sizeof n) std::memcpy(&n, v.data(), sizeof n);
  return n;
}

}  // namespace

// A backlog carried across several ends of the base cells, then no consumer
// at all: a grow ring takes more than its base cells without blocking, and
// hands everything back in order.
TEST(RingGrow, BacklogAcrossLapEndsNeverBlocksAProducer) {
  constexpr std::size_t kBase = 2048;
  Ring r = Ring::create(grow_options(kBase));
  std::uint64_t put = 0, got = 0;
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(give(r, numbered(put++), Deadline::never(), false));
  for (std::size_t i = 0; i < 3 * kBase + 17; ++i) {  // 100 items in flight over every lap end
    ASSERT_TRUE(give(r, numbered(put++), Deadline::never(), false)) << "put " << put;
    auto m = take(r, Deadline::never(), false);
    ASSERT_TRUE(m) << "get " << got;
    ASSERT_EQ(number_of(*m), got++);
  }
  ASSERT_EQ(r.size(), 100u);
  // The laps ended at the base cells' end (the next lap's first cells were
  // free): no cell segment was needed for a backlog of 100.
  EXPECT_EQ(growth_mappings(), 0);
  for (std::size_t i = 0; i < kBase + 5000; ++i)
    ASSERT_TRUE(give(r, numbered(put++), Deadline::never(), false)) << "put " << put << " blocked";
  ASSERT_EQ(r.size(), put - got);
  EXPECT_GT(growth_mappings(), 0);  // more than the base cells: a segment
  while (got < put) {
    auto m = take(r, Deadline::never(), false);
    ASSERT_TRUE(m) << "get " << got;
    ASSERT_EQ(number_of(*m), got++);
  }
  EXPECT_EQ(r.size(), 0u);
  EXPECT_FALSE(take(r, Deadline::never(), false));
}

// Several producers lap several consumers over and over with items in
// flight at every lap end: every item arrives exactly once, and each
// consumer sees each producer's items in the order they were put.
TEST(RingGrow, ManyProducersLapManyConsumersExactlyOnceInOrder) {
  constexpr std::size_t kBase = 4096;  // > kJumpAt: empty-ring jumps happen too
  Ring r = Ring::create(grow_options(kBase));
  RingOptions ro;
  ro.capacity = 1u << 18;  // holds every id: nobody drains it before the end
  Ring results = Ring::create(ro);
  constexpr std::uint64_t kProducers = 3, kConsumers = 3, kPer = 40000;
  std::vector<std::unique_ptr<ForkedChild>> kids;
  for (std::uint64_t p = 0; p < kProducers; ++p)
    kids.push_back(std::make_unique<ForkedChild>([&, p] {
      for (std::uint64_t i = 0; i < kPer; ++i) {
        if (!give(r, numbered(p * kPer + i), Deadline::after(30s))) return 1;
        if (i % 5000 == 4999) ::sched_yield();  // let the consumers catch up now and then
      }
      return 0;
    }));
  for (std::uint64_t c = 0; c < kConsumers; ++c)
    kids.push_back(std::make_unique<ForkedChild>([&, c] {
      std::vector<std::uint64_t> next(kProducers, 0);
      for (std::uint64_t n = 0;; ++n) {
        auto m = take(r, Deadline::after(30s));
        if (!m) return 2;
        const std::uint64_t id = number_of(*m);
        if (id == ~std::uint64_t{0}) return 0;  // poison pill
        if (id >= kProducers * kPer) return 3;
        const std::uint64_t p = id / kPer, i = id % kPer;
        if (i < next[p]) return 4;  // out of order for its producer
        next[p] = i + 1;
        if (!give(results, numbered(id), Deadline::after(30s))) return 5;
        if ((n + c) % 3000 == 0) ::sched_yield();  // fall behind now and then: a backlog builds
      }
    }));
  for (std::uint64_t p = 0; p < kProducers; ++p) ASSERT_EQ(kids[p]->wait(60s), 0);
  for (std::uint64_t c = 0; c < kConsumers; ++c) ASSERT_TRUE(give(r, pattern(1, 0)));
  for (std::uint64_t c = 0; c < kConsumers; ++c) ASSERT_EQ(kids[kProducers + c]->wait(60s), 0);
  std::vector<int> seen(kProducers * kPer, 0);
  while (auto m = take(results, Deadline::never(), false)) ++seen[number_of(*m)];
  for (std::uint64_t i = 0; i < kProducers * kPer; ++i) ASSERT_EQ(seen[i], 1) << "item " << i;
  EXPECT_EQ(r.size(), 0u);
}
