// Replies to plain code come straight into a reply slot of the requester's
// mailbox, past its gateway: the slots themselves (detail::Mailbox), and
// requests through them: small and large replies, errors, a request given up
// on whose reply comes late, more requests outstanding than there are slots.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mpx/actors.hpp"
#include "mpx/actors/detail/mailbox.hpp"
#include "mailbox_test_support.hpp"
#include "mpx/event.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;
using ma::detail::Mailbox;
using mpx::detail::Deadline;

using mpx::test::bytes_of;
using mpx::test::text_of;
using mpx::test::unique_name;
using Unlinker = mpx::test::MailboxUnlinker;

TEST(ReplySlot, AFillLandsOnlyForTheKeyItWasLeasedForAndOnlyOnce) {
  auto mb = Mailbox::create(unique_name("slots"), ma::MailboxOptions());
  Unlinker unlink{mb};
  (void)mb->attach_consumer();
  auto index = mb->lease_reply_slot(41);
  ASSERT_TRUE(index);
  EXPECT_FALSE(mb->fill_reply_slot(*index, 40, 2, bytes_of("wrong key")));
  EXPECT_FALSE(mb->filled_reply_slot(*index, 41));
  EXPECT_TRUE(mb->fill_reply_slot(*index, 41, 2, bytes_of("the reply")));
  auto reply = mb->filled_reply_slot(*index, 41);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->kind, 2);
  EXPECT_EQ(text_of(reply->bytes), "the reply");
  EXPECT_FALSE(mb->fill_reply_slot(*index, 41, 2, bytes_of("a second reply")));  // filled once
  EXPECT_EQ(text_of(mb->filled_reply_slot(*index, 41)->bytes), "the reply");
  mb->release_reply_slot(*index, 41);

  // Released while armed: a late reply finds nothing to fill.
  auto again = mb->lease_reply_slot(42);
  ASSERT_TRUE(again);
  mb->release_reply_slot(*again, 42);
  EXPECT_FALSE(mb->fill_reply_slot(*again, 42, 2, bytes_of("late")));

  // Too large for a slot: refused (the reply then goes by the log); the
  // largest that fits lands whole.
  auto big = mb->lease_reply_slot(43);
  ASSERT_TRUE(big);
  EXPECT_FALSE(mb->fill_reply_slot(*big, 43, 2, bytes_of(std::string(Mailbox::kReplySlotBytes + 1, 'x'))));
  const std::string largest(Mailbox::kReplySlotBytes, 'y');
  EXPECT_TRUE(mb->fill_reply_slot(*big, 43, 2, bytes_of(largest)));
  EXPECT_EQ(text_of(mb->filled_reply_slot(*big, 43)->bytes), largest);
  mb->release_reply_slot(*big, 43);
}

TEST(ReplySlot, EverySlotLeasedThenNoneUntilOneIsReleased) {
  auto mb = Mailbox::create(unique_name("slots-all"), ma::MailboxOptions());
  Unlinker unlink{mb};
  (void)mb->attach_consumer();
  std::vector<std::uint32_t> leased;
  for (std::uint32_t key = 1; key <= Mailbox::kReplySlots; ++key) {
    auto index = mb->lease_reply_slot(key);
    ASSERT_TRUE(index) << "slot " << key;
    leased.push_back(*index);
  }
  std::sort(leased.begin(), leased.end());
  EXPECT_EQ(std::unique(leased.begin(), leased.end()), leased.end());
  EXPECT_FALSE(mb->lease_reply_slot(1000));
  mb->release_reply_slot(leased[7], 8);
  auto index = mb->lease_reply_slot(1001);
  ASSERT_TRUE(index);
  EXPECT_EQ(*index, leased[7]);
}

// The waiter sleeps on its slot; another process fills it and wakes it.
TEST(ReplySlot, AWaiterAsleepIsWokenByAFillFromAnotherProcess) {
  auto mb = Mailbox::create(unique_name("slots-wake"), ma::MailboxOptions());
  Unlinker unlink{mb};
  (void)mb->attach_consumer();
  auto index = mb->lease_reply_slot(7);
  ASSERT_TRUE(index);
  mpx::Event waiting;  // shared with the child: set once the parent is about to sleep
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto other = Mailbox::open(mb->name());
    if (!waiting.wait(30s)) ::_exit(2);
    ::_exit(other->fill_reply_slot(*index, 7, 2, bytes_of("from the child")) ? 0 : 1);
  }
  const Deadline deadline = Deadline::after(30s);
  bool woke_filled = false;
  while (!deadline.expired()) {
    const std::uint32_t seq = mb->reply_slot_seq(*index);
    if (mb->filled_reply_slot(*index, 7)) {
      woke_filled = true;
      break;
    }
    waiting.set();
    mb->wait_reply_slot(*index, seq, deadline);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_TRUE(woke_filled);
  EXPECT_EQ(text_of(mb->filled_reply_slot(*index, 7)->bytes), "from the child");
}

// ---- requests from plain code to a host

namespace {
struct Echo {
  std::string text;
  template <class A>
  void serialize(A& ar) {
    ar(text);
  }
};
struct Fail {
  template <class A>
  void serialize(A&) {}
};
struct Hold {
  int value = 0;
  template <class A>
  void serialize(A& ar) {
    ar(value);
  }
};

// Made before the hosts are forked, so parent and hosts share them.
mpx::Event& held() {
  static mpx::Event event;
  return event;
}
mpx::Event& release() {
  static mpx::Event event;
  return event;
}

ma::Behavior echo_actor(ma::Context&) {
  return {
      [](const Echo& m) { return m.text; },
      [](const Fail&) -> int { throw std::invalid_argument("asked to fail"); },
      [](const Hold& h) {
        held().set();
        (void)release().wait(60s);
        return h.value;
      },
  };
}
MPX_REGISTER_ACTOR(echo_actor);

// This process' own mailbox: where replies by the log would be written.
std::shared_ptr<Mailbox> own_mailbox() {
  const std::string pid = std::to_string(::getpid());
  return Mailbox::open("mpx." + pid + ".p" + pid);
}
}  // namespace

TEST(ReplySlot, SmallRepliesBypassTheRequestersLogLargeOnesUseIt) {
  ma::Host host("slot-echo");
  auto echo = host.spawn("echo_actor", "e");
  EXPECT_EQ(echo.request<std::string>(Echo{"warm"}).get(30s), "warm");  // this process' endpoint exists now
  auto mine = own_mailbox();
  const std::uint64_t before = mine->write_position();
  for (int i = 0; i < 200; ++i) {
    const std::string text = "small " + std::to_string(i);
    ASSERT_EQ(echo.request<std::string>(Echo{text}).get(30s), text);
  }
  EXPECT_EQ(mine->write_position(), before) << "a small reply came by the log";
  const std::string large(3 * Mailbox::kReplySlotBytes, 'L');
  EXPECT_EQ(echo.request<std::string>(Echo{large}).get(30s), large);
  EXPECT_GT(mine->write_position(), before) << "a reply too large for a slot must come by the log";
}

TEST(ReplySlot, ErrorsComeThroughTheSlotAsRemoteErrorAndActorDown) {
  ma::Host host("slot-fail");
  auto echo = host.spawn("echo_actor", "e");
  try {
    (void)echo.request<int>(Fail{}).get(30s);
    FAIL() << "no RemoteError";
  } catch (const ma::RemoteError& e) {
    EXPECT_NE(std::string(e.what()).find("asked to fail"), std::string::npos) << e.what();
  }
  // The exception stopped the actor: the host's gateway answers the next
  // request with ActorDown, through the slot too.
  EXPECT_THROW((void)echo.request<std::string>(Echo{"after"}).get(30s), ma::ActorDown);
}

// A request timed out and dropped: its slot is leased again at once; the
// late reply must not land in the request that now holds it.
TEST(ReplySlot, ALateReplyToARequestGivenUpOnDoesNotReachTheNextOne) {
  (void)held();
  (void)release();
  held().clear();
  release().clear();
  ma::Host host("slot-late");
  auto echo = host.spawn("echo_actor", "e");
  {
    auto stuck = echo.request<int>(Hold{7});
    ASSERT_TRUE(held().wait(30s));
    EXPECT_THROW((void)stuck.get(1ms), mpx::TimeoutError);
  }  // dropped: the slot is free again
  auto next = echo.request<std::string>(Echo{"mine"});  // queued behind the held handler
  release().set();
  EXPECT_EQ(next.get(30s), "mine");
  for (int i = 0; i < 100; ++i) ASSERT_EQ(echo.request<std::string>(Echo{std::to_string(i)}).get(30s), std::to_string(i));
}

// More requests outstanding than there are slots: the rest go by the log,
// every reply reaches its own request.
TEST(ReplySlot, MoreOutstandingRequestsThanSlotsAllGetTheirOwnReply) {
  ma::Host host("slot-many");
  auto echo = host.spawn("echo_actor", "e");
  std::vector<ma::Response<std::string>> responses;
  const int n = 3 * static_cast<int>(Mailbox::kReplySlots);
  for (int i = 0; i < n; ++i) responses.push_back(echo.request<std::string>(Echo{"r" + std::to_string(i)}));
  for (int i = n - 1; i >= 0; --i) ASSERT_EQ(responses[i].get(30s), "r" + std::to_string(i));
}

// Copies of one Response share one outcome, whichever thread settles it.
TEST(ReplySlot, CopiesWaitedOnFromSeveralThreadsSeeOneOutcome) {
  ma::Host host("slot-copies");
  auto echo = host.spawn("echo_actor", "e");
  for (int round = 0; round < 200; ++round) {
    auto response = echo.request<std::string>(Echo{"r" + std::to_string(round)});
    auto copy = response;
    std::string a, b;
    std::thread other([&] { a = copy.get(30s); });
    b = response.get(30s);
    other.join();
    ASSERT_EQ(a, "r" + std::to_string(round));
    ASSERT_EQ(b, a);
    ASSERT_EQ(response.get(1s), a);  // settled: the same again, the slot long released
  }
  // Every slot came back: a full set can be leased by requests in flight.
  std::vector<ma::Response<std::string>> many;
  for (std::uint32_t i = 0; i < Mailbox::kReplySlots; ++i) many.push_back(echo.request<std::string>(Echo{"m"}));
  for (auto& r : many) ASSERT_EQ(r.get(30s), "m");
}
