// Messages between actors: ordering and exactly-once in a mesh of hosts,
// large messages, continuations and response promises, refs across restarts.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <numeric>
#include <string>
#include <unordered_set>
#include <vector>

#include "mpx/actors.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;

namespace {

// ---- a mesh: every actor sends numbered messages to every other one

struct Start {
  std::vector<ma::ActorRef> peers;
  int count = 0;
  template <class A>
  void serialize(A& ar) {
    ar(peers, count);
  }
};
struct Numbered {
  ma::ActorRef from;
  int seq = 0;
  template <class A>
  void serialize(A& ar) {
    ar(from, seq);
  }
};
struct Stats {
  int received = 0;
  int out_of_order = 0;  // a seq that is not the previous one + 1 from that sender
  int senders = 0;
  template <class A>
  void serialize(A& ar) {
    ar(received, out_of_order, senders);
  }
};
struct GetStats {
  template <class A>
  void serialize(A&) {}
};

ma::Behavior mesh_node(ma::Context& self) {
  auto last = std::make_shared<std::map<ma::ActorRef, int>>();
  auto stats = std::make_shared<Stats>();
  return {
      [&self](const Start& s) {
        for (int seq = 0; seq < s.count; ++seq)
          for (const auto& peer : s.peers)
            if (peer != self.self()) peer.send(Numbered{self.self(), seq});
        return true;
      },
      [last, stats](const Numbered& m) {
        auto [it, fresh] = last->try_emplace(m.from, -1);
        if (m.seq != it->second + 1) ++stats->out_of_order;
        it->second = m.seq;
        ++stats->received;
        stats->senders = static_cast<int>(last->size());
      },
      [stats](const GetStats&) { return *stats; },
  };
}
MPX_REGISTER_ACTOR(mesh_node);

}  // namespace

TEST(Messaging, FourHostsTimesFourActorsEveryMessageOnceInPerSenderOrder) {
  constexpr int kHosts = 4, kActors = 4, kCount = 400;
  std::vector<ma::Host> hosts;
  std::vector<ma::ActorRef> actors;
  for (int h = 0; h < kHosts; ++h) {
    hosts.emplace_back("mesh-" + std::to_string(h));
    for (int a = 0; a < kActors; ++a) actors.push_back(hosts.back().spawn("mesh_node", "n" + std::to_string(a)));
  }
  std::vector<ma::Response<bool>> started;
  for (auto& actor : actors) started.push_back(actor.request<bool>(Start{actors, kCount}));
  for (auto& s : started) EXPECT_TRUE(s.get(120s));
  const int expected = (kHosts * kActors - 1) * kCount;
  for (auto& actor : actors) {
    Stats stats;
    auto deadline = std::chrono::steady_clock::now() + 120s;
    do {  // the senders' requests returned: their messages are in the mailboxes, maybe not handled yet
      stats = actor.request<Stats>(GetStats{}).get(60s);
      if (stats.received >= expected) break;
      std::this_thread::sleep_for(5ms);
    } while (std::chrono::steady_clock::now() < deadline);
    EXPECT_EQ(stats.received, expected) << actor;
    EXPECT_EQ(stats.out_of_order, 0) << actor;
    EXPECT_EQ(stats.senders, kHosts * kActors - 1) << actor;
  }
}

// ---- large messages

namespace {
struct Blob {
  std::vector<std::uint8_t> bytes;
  template <class A>
  void serialize(A& ar) {
    ar(bytes);
  }
};
struct Relay {
  ma::ActorRef to;
  Blob blob;
  template <class A>
  void serialize(A& ar) {
    ar(to, blob);
  }
};
ma::Behavior blob_actor(ma::Context& self) {
  return {
      [](const Blob& b) {
        Blob out{b.bytes};
        std::reverse(out.bytes.begin(), out.bytes.end());
        return out;
      },
      [&self](const Relay& r) {  // actor to actor, then back to the requester
        auto promise = self.make_response_promise<Blob>();
        r.to.request<Blob>(r.blob).then([promise](Blob b) mutable { promise.deliver(b); },
                                        [promise](const mpx::Error& e) mutable { promise.deliver_error("relay", e.what()); });
        return promise;
      },
  };
}
MPX_REGISTER_ACTOR(blob_actor);
}  // namespace

TEST(Messaging, SixteenMegabyteMessagesBetweenActorsInTwoProcesses) {
  ma::Host h1("blob-1"), h2("blob-2");
  auto a = h1.spawn("blob_actor", "a");
  auto b = h2.spawn("blob_actor", "b");
  Blob blob;
  blob.bytes.resize(16u << 20);
  for (std::size_t i = 0; i < blob.bytes.size(); ++i) blob.bytes[i] = static_cast<std::uint8_t>(i * 131 + (i >> 12));
  Blob reversed = a.request<Blob>(Relay{b, blob}).get(120s);  // main -> a (h1) -> b (h2) -> a -> main
  ASSERT_EQ(reversed.bytes.size(), blob.bytes.size());
  std::reverse(reversed.bytes.begin(), reversed.bytes.end());
  EXPECT_TRUE(reversed.bytes == blob.bytes);
}

TEST(Messaging, TooLargeForTheMailboxIsATypedError) {
  ma::Host h("blob-small", ma::HostOptions().with_mailbox(ma::MailboxOptions().with_bytes(1u << 20)));
  auto a = h.spawn("blob_actor", "a");
  Blob blob;
  blob.bytes.resize(1u << 20);
  EXPECT_THROW(a.send(blob), ma::MessageTooLarge);
  blob.bytes.resize(1000);
  EXPECT_EQ(a.request<Blob>(blob).get(30s).bytes.size(), 1000u);
}

// ---- refs across a restart

namespace {
struct Add {
  int a = 0, b = 0;
  template <class A>
  void serialize(A& ar) {
    ar(a, b);
  }
};
struct Count {
  template <class A>
  void serialize(A&) {}
};
ma::Behavior counter(ma::Context&) {
  auto n = std::make_shared<int>(0);
  return {
      [n](const Add& m) { *n += m.a + m.b; },
      [n](const Count&) { return *n; },
  };
}
MPX_REGISTER_ACTOR(counter);
}  // namespace

TEST(Messaging, ANamedRefSurvivesARestartAndMessagesSentMeanwhileWait) {
  ma::Host h("restart-named");
  auto named = h.spawn("counter", "c");
  auto anonymous = h.spawn("counter");
  EXPECT_EQ(named.request<int>(Count{}).get(30s), 0);
  ::kill(h.pid(), SIGKILL);
  h.join();
  for (int i = 0; i < 100; ++i) named.send(Add{1, 0});  // the host is dead: they wait in the mailbox
  EXPECT_THROW((void)named.request<int>(Count{}).get(30s), ma::ActorDown);  // no host running: at once
  EXPECT_EQ(h.mailbox_depth(), 100u);
  h.restart();
  EXPECT_EQ(h.restarts(), 1u);
  EXPECT_EQ(named.request<int>(Count{}).get(30s), 100);  // the new incarnation's "c" got them all
  EXPECT_EQ(h.actor("c"), named);
  try {
    (void)anonymous.request<int>(Count{}).get(30s);  // that instance died with the old process
    FAIL() << "no exception";
  } catch (const ma::ActorDown& e) {
    EXPECT_EQ(e.reason(), "noproc");
  }
}

TEST(Messaging, RefsAreValuesThatTravelInsideMessages) {
  ma::ActorRef a("h", "x", 0, 1), b("h", "x", 0, 2), c("h", "", 7, 1);
  EXPECT_EQ(a, b);  // pid is informational
  EXPECT_NE(a, c);
  EXPECT_EQ(std::hash<ma::ActorRef>{}(a), std::hash<ma::ActorRef>{}(b));
  auto decoded = mpx::decode<ma::ActorRef>(mpx::encode(c));
  EXPECT_EQ(decoded, c);
  EXPECT_EQ(decoded.pid(), 1);
  std::unordered_set<ma::ActorRef> set{a, b, c};
  EXPECT_EQ(set.size(), 2u);
  EXPECT_EQ(c.to_string(), "<actor #7 on h pid 1>");
}

namespace {

// ---- sender(): who sent the message in hand (read on demand from the record)

struct Note {
  int n = 0;
  template <class A>
  void serialize(A& ar) {
    ar(n);
  }
};
struct SendNote {
  ma::ActorRef to;
  template <class A>
  void serialize(A& ar) {
    ar(to);
  }
};
struct Senders {
  template <class A>
  void serialize(A&) {}
};

ma::Behavior sender_log(ma::Context& self) {
  auto seen = std::make_shared<std::vector<ma::ActorRef>>();
  return {
      [&self, seen](const Note&) { seen->push_back(self.sender()); },
      [](const SendNote& m) {
        m.to.send(Note{1});
        return true;
      },
      [&self, seen](const Senders&) {
        auto out = *seen;
        out.push_back(self.sender());  // the request's own sender
        return out;
      },
  };
}
MPX_REGISTER_ACTOR(sender_log);

}  // namespace

TEST(Messaging, SenderNamesThePlainProcessOrTheActorThatSent) {
  ma::Host first("sender-a"), second("sender-b");
  auto log = first.spawn("sender_log", "log");
  auto relay = second.spawn("sender_log", "relay");
  log.send(Note{0});                                          // from this plain process
  ASSERT_TRUE(relay.request<bool>(SendNote{log}).get(30s));  // relay -> log, from an actor in another host
  auto seen = log.request<std::vector<ma::ActorRef>>(Senders{}).get(30s);
  ASSERT_EQ(seen.size(), 3u);
  const std::string me = "p" + std::to_string(::getpid());
  EXPECT_EQ(seen[0].host(), me);
  EXPECT_TRUE(seen[0].name().empty());
  EXPECT_EQ(seen[0].pid(), ::getpid());
  EXPECT_EQ(seen[1], relay);
  EXPECT_EQ(seen[1].pid(), second.pid());
  EXPECT_EQ(seen[2], seen[0]);
}
