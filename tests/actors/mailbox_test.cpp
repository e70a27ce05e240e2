// The host mailbox: the shared-memory log itself (detail::Mailbox) and what a
// host makes of it: bounds and policies, and a crash that loses nothing.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "actor_ledger.hpp"
#include "child_process.hpp"
#include "mailbox_test_support.hpp"
#include "mpx/actors.hpp"
#include "mpx/actors/detail/mailbox.hpp"
#include "mpx/event.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;
using ma::detail::Mailbox;
using mpx::detail::Deadline;

using mpx::test::bytes_of;
using mpx::test::text_of;
using mpx::test::unique_name;

TEST(MailboxLog, RecordsComeOutInOrderAndSpaceIsReusedAcrossTheWrap) {
  auto mb = Mailbox::create(unique_name("wrap"), ma::MailboxOptions().with_bytes(64 << 10).with_capacity(1000));
  // 64 KiB of log, records of ~1 KiB: 20 laps.
  for (int i = 0; i < 1200; ++i) {
    std::string payload(900 + i % 200, static_cast<char>('a' + i % 26));
    payload += std::to_string(i);
    ASSERT_TRUE(mb->put(bytes_of(payload), {}, Deadline::never()));
    auto taken = mb->take(Deadline::after(1s));
    ASSERT_TRUE(taken);
    EXPECT_EQ(text_of(taken->bytes), payload);
    EXPECT_FALSE(taken->redelivered);
    mb->complete(taken->pos);
  }
  EXPECT_EQ(mb->depth(), 0u);
  mb->unlink();
}

TEST(MailboxLog, TooLargeIsATypedError) {
  auto mb = Mailbox::create(unique_name("large"), ma::MailboxOptions().with_bytes(64 << 10));
  std::string big(40 << 10, 'x');
  EXPECT_THROW((void)mb->put(bytes_of(big), {}, Deadline::never()), ma::MessageTooLarge);
  mb->unlink();
}

TEST(MailboxLog, FullLogBlocksUntilTheDeadlineThenFreesAfterComplete) {
  auto mb = Mailbox::create(unique_name("full"), ma::MailboxOptions().with_bytes(64 << 10).with_capacity(3));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(mb->put(bytes_of("m" + std::to_string(i)), {}, Deadline::never()));
  EXPECT_FALSE(mb->put(bytes_of("m3"), {}, Deadline::after(50ms)));  // block policy: waits, then full
  EXPECT_FALSE(mb->put(bytes_of("m3"), {}, Deadline::never(), false));
  auto t = mb->take(Deadline::after(1s));
  ASSERT_TRUE(t);
  EXPECT_TRUE(mb->put(bytes_of("m3"), {}, Deadline::after(1s)));  // one taken: room for one
  mb->unlink();
}

// take() wakes producers held at the bound only once an eighth of it is free
// (or it is about to sleep): a producer whose one free slot comes from a
// single take still gets in, by its own re-check.
TEST(MailboxLog, AProducerHeldAtTheBoundGetsInAfterASingleTake) {
  auto mb = Mailbox::create(unique_name("slot"), ma::MailboxOptions().with_bytes(1 << 20).with_capacity(64));
  for (int i = 0; i < 64; ++i) ASSERT_TRUE(mb->put(bytes_of("m" + std::to_string(i)), {}, Deadline::never()));
  std::atomic<bool> in{false};
  std::thread producer([&] { in = mb->put(bytes_of("m64"), {}, Deadline::after(5s)); });
  auto t = mb->take(Deadline::after(1s));  // depth 63: above the wake mark
  ASSERT_TRUE(t);
  producer.join();
  EXPECT_TRUE(in);
  EXPECT_EQ(mb->depth(), 64u);
  for (int i = 1; i <= 64; ++i) {
    auto next = mb->take(Deadline::after(1s));
    ASSERT_TRUE(next);
    EXPECT_EQ(text_of(next->bytes), "m" + std::to_string(i));
  }
  mb->unlink();
}

// Many records through a small bound and a consumer that often catches up
// with its producer: the wake-up marks lose no record and no wake-up.
TEST(MailboxLog, AStreamThroughASmallBoundArrivesWhole) {
  auto mb = Mailbox::create(unique_name("stream"), ma::MailboxOptions().with_bytes(1 << 20).with_capacity(16));
  constexpr int kRecords = 50000;
  std::thread producer([&] {
    for (int i = 0; i < kRecords; ++i) ASSERT_TRUE(mb->put(bytes_of(std::to_string(i)), {}, Deadline::after(30s)));
  });
  for (int i = 0; i < kRecords; ++i) {
    auto t = mb->take(Deadline::after(30s));
    ASSERT_TRUE(t) << "record " << i;
    ASSERT_EQ(text_of(t->bytes), std::to_string(i));
    mb->complete(t->pos);
  }
  producer.join();
  EXPECT_EQ(mb->depth(), 0u);
  mb->unlink();
}

TEST(MailboxLog, DropOldestDropsTheOldestWaitingMessage) {
  auto mb = Mailbox::create(unique_name("drop"),
                            ma::MailboxOptions().with_capacity(3).with_policy(ma::MailboxPolicy::drop_oldest));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(mb->put(bytes_of("m" + std::to_string(i)), {}, Deadline::never()));
  EXPECT_EQ(mb->dropped(), 2u);
  EXPECT_EQ(mb->depth(), 3u);
  for (int i = 2; i < 5; ++i) {
    auto t = mb->take(Deadline::after(1s));
    ASSERT_TRUE(t);
    EXPECT_EQ(text_of(t->bytes), "m" + std::to_string(i));
    mb->complete(t->pos);
  }
  mb->unlink();
}

TEST(MailboxLog, FailPolicyRefusesAtOnce) {
  auto mb = Mailbox::create(unique_name("fail"), ma::MailboxOptions().with_capacity(2).with_policy(ma::MailboxPolicy::fail));
  EXPECT_TRUE(mb->put(bytes_of("a"), {}, Deadline::never()));
  EXPECT_TRUE(mb->put(bytes_of("b"), {}, Deadline::never()));
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(mb->put(bytes_of("c"), {}, Deadline::never()));  // no wait under `fail`
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  mb->unlink();
}

TEST(MailboxLog, ADeadConsumersTakenAndInHandRecordsAreHandedToTheNextOne) {
  const std::string name = unique_name("recover");
  auto mb = Mailbox::create(name, ma::MailboxOptions());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(mb->put(bytes_of("m" + std::to_string(i)), {}, Deadline::never()));
  {
    // A consumer process: completes m0, m1; holds m2 in hand; has taken m3, m4; dies.
    mpx::test::Child consumer([name] {
      auto view = Mailbox::open(name);
      view->attach_consumer();
      for (int i = 0; i < 5; ++i) {
        auto t = view->take(Deadline::after(5s));
        if (!t) return 1;
        if (i < 2) view->complete(t->pos);
        if (i == 2) view->mark_handling(t->pos);
      }
      ::kill(::getpid(), SIGKILL);
      return 2;
    });
    EXPECT_EQ(consumer.join(), -SIGKILL);
  }
  auto recovery = mb->attach_consumer();
  EXPECT_EQ(recovery.redelivered, 1u);
  EXPECT_EQ(recovery.requeued, 2u);
  EXPECT_EQ(mb->depth(), 8u);
  for (int i = 2; i < 10; ++i) {
    auto t = mb->take(Deadline::after(1s));
    ASSERT_TRUE(t);
    EXPECT_EQ(text_of(t->bytes), "m" + std::to_string(i));
    EXPECT_EQ(t->redelivered, i == 2) << i;
    mb->complete(t->pos);
  }
  EXPECT_FALSE(mb->take(Deadline::after(20ms)));
  mb->unlink();
}

// Taken records stay READY below the read position unless the policy is
// drop_oldest (then TAKEN, so that a dropping sender cannot take them back):
// both must count as in flight, and both must come back after a crash.
class TakenRecords : public ::testing::TestWithParam<ma::MailboxPolicy> {};

TEST_P(TakenRecords, CountAsInFlightAndAreRequeuedAfterTheConsumerDies) {
  const std::string name = unique_name("taken");
  auto mb = Mailbox::create(name, ma::MailboxOptions().with_capacity(10).with_policy(GetParam()));
  mpx::test::MailboxUnlinker unlinker{mb};
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(mb->put(bytes_of("m" + std::to_string(i)), {}, Deadline::never()));
  {
    // Completes m0 and m2, holds m1 in hand, has taken m3 and m4; dies.
    mpx::test::Child consumer([name] {
      auto view = Mailbox::open(name);
      view->attach_consumer();
      std::vector<std::uint64_t> pos;
      for (int i = 0; i < 5; ++i) {
        auto t = view->take(Deadline::after(5s));
        if (!t) return 1;
        pos.push_back(t->pos);
      }
      if (view->in_flight() != 5) return 3;
      view->complete(pos[0]);
      view->mark_handling(pos[1]);
      view->complete(pos[2]);
      if (view->in_flight() != 3) return 4;
      ::kill(::getpid(), SIGKILL);
      return 2;
    });
    EXPECT_EQ(consumer.join(), -SIGKILL);
  }
  EXPECT_EQ(mb->in_flight(), 3u) << "seen from another process";
  auto recovery = mb->attach_consumer();
  EXPECT_EQ(recovery.redelivered, 1u);
  EXPECT_EQ(recovery.requeued, 2u);
  EXPECT_EQ(mb->depth(), 8u);
  EXPECT_EQ(mb->in_flight(), 0u);
  for (int i : {1, 3, 4, 5, 6, 7, 8, 9}) {
    auto t = mb->take(Deadline::after(1s));
    ASSERT_TRUE(t);
    EXPECT_EQ(text_of(t->bytes), "m" + std::to_string(i));
    EXPECT_EQ(t->redelivered, i == 1) << i;
    mb->complete(t->pos);
  }
  EXPECT_FALSE(mb->take(Deadline::after(20ms)));
  EXPECT_EQ(mb->in_flight(), 0u);
  EXPECT_EQ(mb->depth(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Policies, TakenRecords,
                         ::testing::Values(ma::MailboxPolicy::block, ma::MailboxPolicy::drop_oldest),
                         [](const auto& info) {
                           return info.param == ma::MailboxPolicy::block ? std::string("block")
                                                                         : std::string("drop_oldest");
                         });

TEST(MailboxLog, ATakenRecordIsNotDroppedUnderDropOldest) {
  // The gateway has taken m0 (not yet handled) when a sender finds the
  // mailbox full: drop_oldest drops m1, the oldest still waiting, not m0.
  auto mb = Mailbox::create(unique_name("droptaken"),
                            ma::MailboxOptions().with_capacity(2).with_policy(ma::MailboxPolicy::drop_oldest));
  mpx::test::MailboxUnlinker unlinker{mb};
  mb->attach_consumer();
  ASSERT_TRUE(mb->put(bytes_of("m0"), {}, Deadline::never()));
  auto first = mb->take(Deadline::after(1s));
  ASSERT_TRUE(first);
  for (int i = 1; i <= 3; ++i) ASSERT_TRUE(mb->put(bytes_of("m" + std::to_string(i)), {}, Deadline::never()));
  EXPECT_EQ(mb->dropped(), 1u);
  EXPECT_EQ(text_of(first->bytes), "m0");
  mb->complete(first->pos);
  for (const char* expected : {"m2", "m3"}) {
    auto t = mb->take(Deadline::after(1s));
    ASSERT_TRUE(t);
    EXPECT_EQ(text_of(t->bytes), expected);
    mb->complete(t->pos);
  }
  EXPECT_EQ(mb->depth(), 0u);
}

namespace {
// In a child: a put whose body is half readable, half not, so that the copy
// into the log faults in the middle and the child dies of SIGSEGV there.
// Returns only if it could not set that up (3) or the put did not fault (2).
int put_faulting_mid_copy(Mailbox& mailbox) {
  const long page = ::sysconf(_SC_PAGESIZE);
  void* area = ::mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (area == MAP_FAILED || ::mprotect(static_cast<char*>(area) + page, page, PROT_NONE) != 0) return 3;
  std::span<const std::byte> body(static_cast<const std::byte*>(area) + page / 2, page);
  ::signal(SIGSEGV, SIG_DFL);  // sanitizer builds catch SIGSEGV themselves
  (void)mailbox.put({}, body, Deadline::never());
  return 2;
}
}  // namespace

TEST(MailboxLog, AProducerThatDiesMidCopyLosesOnlyItsOwnRecord) {
  // The log ends at an empty header, not at write_pos: a record whose
  // writer crashed while copying (its body runs into an unmapped page) must
  // be skipped, the next producer's records must come out, and the depth
  // must not keep the lost one.
  const std::string name = unique_name("deadwriter");
  auto mb = Mailbox::create(name, ma::MailboxOptions().with_capacity(16));
  ASSERT_TRUE(mb->put(bytes_of("before"), {}, Deadline::never()));
  {
    mpx::test::Child writer([name] { return put_faulting_mid_copy(*Mailbox::open(name)); });
    EXPECT_EQ(writer.join(), -SIGSEGV);
  }
  EXPECT_EQ(mb->depth(), 2u) << "the dead writer's record counts until the consumer finds it dead";
  ASSERT_TRUE(mb->put(bytes_of("after"), {}, Deadline::never()));
  mb->attach_consumer();
  auto first = mb->take(Deadline::after(5s));
  ASSERT_TRUE(first);
  EXPECT_EQ(text_of(first->bytes), "before");
  mb->complete(first->pos);
  auto second = mb->take(Deadline::after(5s));  // past the dead writer's record (a 20 ms liveness tick)
  ASSERT_TRUE(second);
  EXPECT_EQ(text_of(second->bytes), "after");
  mb->complete(second->pos);
  EXPECT_EQ(mb->depth(), 0u);
  EXPECT_FALSE(mb->take(Deadline::after(20ms)));
  mb->unlink();
}

// ---- through a host

namespace {

struct Hold {  // the handler blocks until `release` is set
  template <class A>
  void serialize(A&) {}
};
struct Item {
  int value = 0;
  template <class A>
  void serialize(A& ar) {
    ar(value);
  }
};
struct Seen {
  template <class A>
  void serialize(A&) {}
};

// Made before the hosts are forked, so parent and hosts share them.
mpx::Event& started() {
  static mpx::Event event;
  return event;
}
mpx::Event& release() {
  static mpx::Event event;
  return event;
}

ma::Behavior holder(ma::Context&) {
  auto seen = std::make_shared<std::vector<int>>();
  return {
      [](const Hold&) {
        started().set();
        (void)release().wait(60s);
      },
      [seen](const Item& item) { seen->push_back(item.value); },
      [seen](const Seen&) { return *seen; },
  };
}
MPX_REGISTER_ACTOR(holder);

// A host whose one actor is stuck in a handler and whose gateway takes
// nothing more (in_flight 1): every later message waits in the mailbox.
ma::Host blocked_host(const std::string& name, ma::MailboxPolicy policy, ma::ActorRef& actor) {
  (void)started();
  (void)release();
  started().clear();
  release().clear();
  ma::Host host(name, ma::HostOptions().with_mailbox(ma::MailboxOptions().with_capacity(4).with_in_flight(1).with_policy(policy)));
  actor = host.spawn("holder", "h");
  actor.send(Hold{});
  EXPECT_TRUE(started().wait(30s));
  return host;
}

}  // namespace

TEST(HostMailbox, ASenderKilledMidCopyDoesNotHoldUpTheMessagesBehindIt) {
  // The host's gateway takes in 10 ms slices, shorter than the 20 ms the
  // log waits before it asks whether a writer is alive: the wait must count
  // across slices, or the dead writer's record blocks the log for good.
  const std::string name = "deadsender-" + std::to_string(::getpid());
  ma::Host host(name);
  auto actor = host.spawn("holder", "h");
  actor.send(Item{1});
  {
    mpx::test::Child writer(
        [name] { return put_faulting_mid_copy(*Mailbox::open("mpx." + std::to_string(::getppid()) + "." + name)); });
    EXPECT_EQ(writer.join(), -SIGSEGV);
  }
  actor.send(Item{2});
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(actor.request<std::vector<int>>(Seen{}).get(10s), (std::vector<int>{1, 2}));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(host.mailbox_depth(), 0u);
}

TEST(HostMailbox, BlockPolicyAppliesBackpressureAndTimedSendThrowsMailboxFull) {
  ma::ActorRef actor;
  auto host = blocked_host("mb-block", ma::MailboxPolicy::block, actor);
  for (int i = 0; i < 4; ++i) actor.send(Item{i});
  EXPECT_EQ(host.mailbox_depth(), 4u);
  EXPECT_THROW(actor.send(Item{4}, 50ms), ma::MailboxFull);
  EXPECT_THROW(actor.send_nowait(Item{4}), ma::MailboxFull);
  std::atomic<bool> sent{false};
  std::thread sender([&] {
    actor.send(Item{4});  // blocks until the host takes one
    sent = true;
  });
  release().set();
  sender.join();
  EXPECT_TRUE(sent);
  EXPECT_EQ(actor.request<std::vector<int>>(Seen{}).get(30s), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(host.dropped(), 0u);
}

namespace {
// Waits (bounded) until the host has taken every message waiting.
bool drained(const ma::Host& host) {
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (host.mailbox_depth() != 0) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}
}  // namespace

TEST(HostMailbox, FailPolicyThrowsMailboxFullAtOnce) {
  ma::ActorRef actor;
  auto host = blocked_host("mb-fail", ma::MailboxPolicy::fail, actor);
  for (int i = 0; i < 4; ++i) actor.send(Item{i});
  EXPECT_THROW(actor.send(Item{4}), ma::MailboxFull);  // even the blocking send
  EXPECT_THROW((void)actor.request<std::vector<int>>(Seen{}), ma::MailboxFull);
  release().set();
  ASSERT_TRUE(drained(host));
  EXPECT_EQ(actor.request<std::vector<int>>(Seen{}).get(30s), (std::vector<int>{0, 1, 2, 3}));
}

TEST(HostMailbox, DropOldestCountsTheDrops) {
  ma::ActorRef actor;
  auto host = blocked_host("mb-drop", ma::MailboxPolicy::drop_oldest, actor);
  for (int i = 0; i < 7; ++i) actor.send(Item{i});
  EXPECT_EQ(host.dropped(), 3u);
  EXPECT_EQ(host.mailbox_depth(), 4u);
  // A request is never dropped: with the bound full of sends, it drops one more send.
  auto seen = actor.request<std::vector<int>>(Seen{});
  EXPECT_EQ(host.dropped(), 4u);
  release().set();
  EXPECT_EQ(seen.get(30s), (std::vector<int>{4, 5, 6}));
}

// ---- a crash loses nothing but the message in hand

namespace {

constexpr int kMessages = 100000;

using mpx::test::Flush;
using mpx::test::Ledger;
using mpx::test::ledger;
using mpx::test::Numbered;

}  // namespace

TEST(HostMailbox, SigkilledThreeTimesEveryMessageHandledOnlyInHandOnesTwice) {
  Ledger* l = ledger();
  l->clear();
  ma::Host host("mb-crash", ma::HostOptions().with_mailbox(ma::MailboxOptions().with_capacity(2 * kMessages)));
  auto keeper = host.spawn("mpx::test::ledger_keeper", "keeper");
  std::mt19937 rng(std::random_device{}());
  std::vector<int> kill_at;
  for (int k = 0; k < 3; ++k) kill_at.push_back(std::uniform_int_distribution<int>(1000, kMessages - 1000)(rng));
  std::sort(kill_at.begin(), kill_at.end());
  std::size_t next_kill = 0;
  int kills = 0;
  for (int i = 0; i < kMessages; ++i) {
    keeper.send(Numbered{static_cast<std::uint32_t>(i)});
    while (next_kill < kill_at.size() && i == kill_at[next_kill]) {
      ++next_kill;
      ::kill(host.pid(), SIGKILL);
      host.join();
      EXPECT_EQ(host.exitcode(), -SIGKILL);
      host.restart();
      ++kills;
    }
  }
  EXPECT_TRUE(keeper.request<bool>(Flush{}).get(120s));  // after every message before it
  EXPECT_EQ(kills, 3);
  EXPECT_EQ(host.restarts(), 3u);
  int missing = 0, twice = 0, twice_unflagged = 0, more = 0;
  for (int i = 0; i < kMessages; ++i) {
    int n = l->handled[i].load();
    if (n == 0) ++missing;
    if (n == 2) {
      ++twice;
      if (!l->flagged[i].load()) ++twice_unflagged;
    }
    if (n > 2) ++more;
  }
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(more, 0);
  EXPECT_LE(twice, 3);            // at most the one in hand at each kill
  EXPECT_EQ(twice_unflagged, 0);  // and each of those was flagged redelivered
  host.shutdown();
  EXPECT_EQ(host.exitcode(), 0);
}
