// Monitors and links, across processes and inside one: every way an actor stops.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <string>

#include "mpx/actors.hpp"
#include "mpx/event.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;

namespace {

struct Ping {
  template <class A>
  void serialize(A&) {}
};
struct Boom {
  template <class A>
  void serialize(A&) {}
};
struct Watch {
  ma::ActorRef target;
  template <class A>
  void serialize(A& ar) {
    ar(target);
  }
};
struct LinkTo {
  ma::ActorRef target;
  bool trap = false;
  template <class A>
  void serialize(A& ar) {
    ar(target, trap);
  }
};
struct LastEvent {
  template <class A>
  void serialize(A&) {}
};

ma::Behavior pinger(ma::Context& self) {
  return {
      [](const Ping&) { return 1; },
      [](const Boom&) -> int { throw std::runtime_error("boom"); },
      [&self](const ma::PoisonPill&) { self.stop(); },
  };
}
MPX_REGISTER_ACTOR(pinger);

// Watches or links to a target; remembers the last Down / ExitSignal it got.
ma::Behavior watcher(ma::Context& self) {
  auto last = std::make_shared<std::string>("none");
  return {
      [&self](const Watch& w) {
        self.monitor(w.target);
        return true;
      },
      [&self](const LinkTo& l) {
        self.set_trap_exit(l.trap);
        self.link(l.target);
        return true;
      },
      [last](const ma::Down& d) { *last = std::string("down ") + ma::to_string(d.kind) + " " + d.actor.name(); },
      [last](const ma::ExitSignal& e) { *last = std::string("exit ") + ma::to_string(e.kind) + " " + e.from.name(); },
      [last](const LastEvent&) { return *last; },
      [](const Ping&) { return 2; },
  };
}
MPX_REGISTER_ACTOR(watcher);

std::string wait_for_event(const ma::ActorRef& w, const std::string& prefix) {
  auto deadline = std::chrono::steady_clock::now() + 30s;
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    last = w.request<std::string>(LastEvent{}).get(30s);
    if (last.rfind(prefix, 0) == 0) return last;
    std::this_thread::sleep_for(2ms);
  }
  return last;
}

}  // namespace

TEST(Monitor, DownForNormalExceptionAndKilledAcrossProcesses) {
  ma::Host host("mon-kinds");
  auto a = host.spawn("pinger", "a");
  auto b = host.spawn("pinger", "b");
  auto c = host.spawn("pinger", "c");
  auto ma_ = ma::monitor(a);
  auto mb = ma::monitor(b);
  auto mc = ma::monitor(c);
  a.send(ma::PoisonPill{});
  EXPECT_THROW((void)b.request<int>(Boom{}).get(30s), ma::RemoteError);
  c.kill();
  auto da = ma_.wait(30s), db = mb.wait(30s), dc = mc.wait(30s);
  ASSERT_TRUE(da && db && dc);
  EXPECT_EQ(da->kind, ma::DownKind::normal);
  EXPECT_EQ(da->actor, a);
  EXPECT_EQ(db->kind, ma::DownKind::exception);
  EXPECT_EQ(db->reason, "exception: std::runtime_error: boom");
  EXPECT_EQ(dc->kind, ma::DownKind::killed);
}

TEST(Monitor, MonitoringAMissingActorGivesNoprocAtOnce) {
  ma::Host host("mon-noproc");
  auto down = ma::monitor(host.actor("ghost")).wait(30s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->kind, ma::DownKind::noproc);
  auto local = ma::monitor(ma::ActorRef("p" + std::to_string(::getpid()), "ghost", 0, ::getpid())).wait(30s);
  ASSERT_TRUE(local);
  EXPECT_EQ(local->kind, ma::DownKind::noproc);
}

TEST(Monitor, HostSigkilledGivesHostDiedWithTheExitCode) {
  ma::Host host("mon-sigkill");
  auto a = host.spawn("pinger", "a");
  mpx::Event fired;
  std::atomic<int> kind{-1};
  ma::monitor(a, [&](const ma::Down& d) {
    kind = static_cast<int>(d.kind);
    fired.set();
  });
  auto m = ma::monitor(a);
  ASSERT_FALSE(m.wait(50ms));  // still running
  ::kill(host.pid(), SIGKILL);
  auto down = m.wait(30s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->kind, ma::DownKind::host_died);
  EXPECT_EQ(down->exit_code, -SIGKILL);
  EXPECT_TRUE(fired.wait(30s));
  EXPECT_EQ(kind.load(), static_cast<int>(ma::DownKind::host_died));
}

TEST(Monitor, AnActorInAnotherHostReceivesDownAsAMessage) {
  ma::Host h1("mon-actor-1"), h2("mon-actor-2");
  auto target = h1.spawn("pinger", "target");
  auto w = h2.spawn("watcher", "w");
  ASSERT_TRUE(w.request<bool>(Watch{target}).get(30s));
  target.kill();
  EXPECT_EQ(wait_for_event(w, "down"), "down killed target");
}

TEST(Monitor, AnActorReceivesDownWhenTheOtherHostDies) {
  ma::Host h1("mon-actor-host-1"), h2("mon-actor-host-2");
  auto target = h1.spawn("pinger", "target");
  auto w = h2.spawn("watcher", "w");
  ASSERT_TRUE(w.request<bool>(Watch{target}).get(30s));
  ::kill(h1.pid(), SIGKILL);
  EXPECT_EQ(wait_for_event(w, "down"), "down host_died target");
}

TEST(Link, AbnormalExitStopsTheLinkedActorAcrossProcesses) {
  ma::Host h1("link-1"), h2("link-2");
  auto a = h1.spawn("pinger", "a");
  auto w = h2.spawn("watcher", "w");
  auto mw = ma::monitor(w);
  ASSERT_TRUE(w.request<bool>(LinkTo{a, false}).get(30s));
  EXPECT_THROW((void)a.request<int>(Boom{}).get(30s), ma::RemoteError);
  auto down = mw.wait(30s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->kind, ma::DownKind::linked);
  EXPECT_NE(down->reason.find("boom"), std::string::npos) << down->reason;
}

TEST(Link, TrapExitTurnsTheExitIntoAMessage) {
  ma::Host h1("link-trap-1"), h2("link-trap-2");
  auto a = h1.spawn("pinger", "a");
  auto w = h2.spawn("watcher", "w");
  ASSERT_TRUE(w.request<bool>(LinkTo{a, true}).get(30s));
  a.kill();
  EXPECT_EQ(wait_for_event(w, "exit"), "exit killed a");
  EXPECT_EQ(w.request<int>(Ping{}).get(30s), 2);  // still alive
}

TEST(Link, NormalExitDoesNotPropagate) {
  ma::Host h("link-normal");
  auto a = h.spawn("pinger", "a");
  auto w = h.spawn("watcher", "w");  // same host: linked through CAF directly
  ASSERT_TRUE(w.request<bool>(LinkTo{a, false}).get(30s));
  auto ma_ = ma::monitor(a);
  a.send(ma::PoisonPill{});
  ASSERT_TRUE(ma_.wait(30s));
  EXPECT_EQ(w.request<int>(Ping{}).get(30s), 2);
}

TEST(Link, TheOtherDirectionPropagatesToo) {
  ma::Host h("link-reverse");
  auto a = h.spawn("pinger", "a");
  auto w = h.spawn("watcher", "w");
  ASSERT_TRUE(w.request<bool>(LinkTo{a, false}).get(30s));
  auto ma_ = ma::monitor(a);
  w.kill();  // w dies abnormally: a, linked, stops too
  auto down = ma_.wait(30s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->kind, ma::DownKind::linked);
}
