// Nodes: process trees connected through CAF's middleman, on 127.0.0.1 and in
// network namespaces the test creates (root only). Every remote node is a
// forked child (killed and reaped by mpx::test::Child, also on failure); a
// node in a namespace enters it with setns() before it makes its Node.
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "child_process.hpp"
#include "mpx/actors.hpp"
#include "mpx/context.hpp"
#include "mpx/detail/shm_tracker.hpp"
#include "mpx/shared_memory.hpp"
#include "netns.hpp"
#include "test_certificates.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;
using mpx::test::Child;
using mpx::test::NetNamespaces;
using mpx::test::Signal;

namespace {

struct Ping {
  int n = 0;
  template <class A>
  void serialize(A& ar) {
    ar(n);
  }
};
struct Count {
  template <class A>
  void serialize(A&) {}
};
struct Hang {
  template <class A>
  void serialize(A&) {}
};
// Handled by sleeping `ms` (a slow consumer), then counted.
struct Nap {
  int ms = 0;
  template <class A>
  void serialize(A& ar) {
    ar(ms);
  }
};
struct Blob {
  std::vector<char> data;
  template <class A>
  void serialize(A& ar) {
    ar(data);
  }
};
// Seq{0}, Seq{1}, ... in order: SeqNext answers the next n expected, or -1
// once one came out of order (or was lost).
struct Seq {
  int n = 0;
  template <class A>
  void serialize(A& ar) {
    ar(n);
  }
};
struct SeqNext {
  template <class A>
  void serialize(A&) {}
};
// Asks the actor to send Ping{n} to `to` and answer with to's reply.
struct Relay {
  ma::ActorRef to;
  int n = 0;
  template <class A>
  void serialize(A& ar) {
    ar(to, n);
  }
};

// Answers Ping{n} with n + 1 and counts the messages it handled; Hang is
// never answered; Relay asks another actor (maybe on another node) from inside.
ma::Behavior echo(ma::Context& self) {
  auto count = std::make_shared<int>(0);
  auto next = std::make_shared<int>(0);
  auto hung = std::make_shared<std::vector<ma::ResponsePromise<int>>>();
  return {
      [next](const Seq& s) { *next = (*next >= 0 && s.n == *next) ? *next + 1 : -1; },
      [next](const SeqNext&) { return *next; },
      [count](const Ping& p) {
        ++*count;
        return p.n + 1;
      },
      [count](const Count&) { return *count; },
      [count](const Nap& n) {
        std::this_thread::sleep_for(std::chrono::milliseconds(n.ms));
        ++*count;
      },
      [count](const Blob& b) {
        ++*count;
        return static_cast<int>(b.data.size());
      },
      [&self, hung](const Hang&) {
        hung->push_back(self.make_response_promise<int>());
        return hung->back();
      },
      [&self](const Relay& r) {
        auto promise = self.make_response_promise<int>();
        r.to.request<int>(Ping{r.n}).then([promise](int v) mutable { promise.deliver(v); },
                                          [promise](const mpx::Error&) mutable { promise.deliver(-1); });
        return promise;
      },
  };
}
MPX_REGISTER_ACTOR(echo);

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
struct Boom {
  template <class A>
  void serialize(A&) {}
};

// Links to a target (trapping exits or not) and remembers the last
// ExitSignal it got; Boom makes it stop abnormally.
ma::Behavior linker(ma::Context& self) {
  auto last = std::make_shared<std::string>("none");
  return {
      [&self](const LinkTo& l) {
        self.set_trap_exit(l.trap);
        self.link(l.target);
        return true;
      },
      [last](const ma::ExitSignal& e) { *last = std::string("exit ") + ma::to_string(e.kind) + " " + e.from.name(); },
      [last](const LastEvent&) { return *last; },
      [](const Boom&) -> int { throw std::runtime_error("boom"); },
  };
}
MPX_REGISTER_ACTOR(linker);

constexpr const char* kSecret = "node-test-secret";

// Two bytes (a port) from a child to the parent.
class PortPipe {
 public:
  PortPipe() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  }
  PortPipe(const PortPipe&) = delete;
  PortPipe& operator=(const PortPipe&) = delete;
  ~PortPipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void send(std::uint16_t port) const { [[maybe_unused]] auto n = ::write(fds_[1], &port, sizeof port); }
  void send_pid(pid_t pid) const { [[maybe_unused]] auto n = ::write(fds_[1], &pid, sizeof pid); }
  // 0 on timeout.
  pid_t wait_pid(std::chrono::milliseconds timeout = 30s) const {
    pollfd p{fds_[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return 0;
    pid_t pid = 0;
    return ::read(fds_[0], &pid, sizeof pid) == sizeof pid ? pid : 0;
  }
  // 0 on timeout.
  std::uint16_t wait(std::chrono::milliseconds timeout = 30s) const {
    pollfd p{fds_[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return 0;
    std::uint16_t port = 0;
    return ::read(fds_[0], &port, sizeof port) == sizeof port ? port : 0;
  }

 private:
  int fds_[2];
};

// A node in a forked child: an "echo" actor named "echo" in its node
// process, and a host `host` (if given) for remote spawns. It reports its
// port and runs until stop() (or 120 s).
class RemoteNode {
 public:
  // `host_actors`: echo actors spawned by name in `host` before the node
  // reports its port.
  RemoteNode(ma::NodeOptions options, std::string netns = "", std::string host = "",
             std::vector<std::string> host_actors = {}, ma::HostOptions host_options = {})
      : name_(options.name),
        child_([this, options, netns, host, host_actors, host_options]() -> int {
          try {
            if (!netns.empty()) NetNamespaces::enter(netns);
            ma::Node node(options);
            ma::spawn("echo", "echo");
            std::optional<ma::Host> worker;
            if (!host.empty()) worker.emplace(host, host_options);
            for (const auto& actor : host_actors) worker->spawn("echo", actor);
            port_.send(node.port());
            (void)stop_.wait(120s);
            return 0;
          } catch (const std::exception& e) {
            std::fprintf(stderr, "remote node %s: %s\n", options.name.c_str(), e.what());
            port_.send(0);
            return 98;
          }
        }) {
    port = port_.wait();
    if (port == 0) throw std::runtime_error("remote node " + name_ + " did not start");
  }
  ~RemoteNode() { stop(); }
  void stop() {
    stop_.notify();
    (void)child_.join(20s);
  }
  void kill() { child_.kill(); }
  [[nodiscard]] pid_t pid() const { return child_.pid(); }
  std::uint16_t port = 0;

 private:
  std::string name_;
  PortPipe port_;
  Signal stop_;
  Child child_;
};

std::string unique(const std::string& base) { return base + "-" + std::to_string(::getpid()); }

ma::NodeOptions options_for(const std::string& name, const std::string& secret = kSecret) {
  return ma::NodeOptions{}.with_name(unique(name)).with_secret(secret);
}

// The linker's last event once it starts with `prefix` ("" after 10 s).
std::string wait_for_event(const ma::ActorRef& linker, const std::string& prefix) {
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < until) {
    std::string last = linker.request<std::string>(LastEvent{}).get(10s);
    if (last.rfind(prefix, 0) == 0) return last;
    std::this_thread::sleep_for(10ms);  // the signal is on its way: ask again
  }
  return "";
}

}  // namespace

// For checks in a child process: they fail its exit code.
#define NODE_CHECK(cond)                                                                  \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);       \
      return 1;                                                                          \
    }                                                                                    \
  } while (0)

// ---- on 127.0.0.1

TEST(Node, RequestResponseNamesAndRemoteSpawnAcrossTwoNodes) {
  RemoteNode b(options_for("b1"), "", unique("hb1"));
  ma::Node a(options_for("a1"));
  EXPECT_NE(a.port(), 0);
  const std::string peer = a.connect("127.0.0.1", b.port, 10s);
  EXPECT_EQ(peer, unique("b1"));
  EXPECT_TRUE(a.is_connected(peer));

  ma::ActorRef echo = a.actor(peer, "echo");
  EXPECT_EQ(echo.node(), peer);
  EXPECT_NE(echo.to_string().find("@" + peer), std::string::npos);
  EXPECT_EQ(echo.request<int>(Ping{41}).get(10s), 42);
  echo.send(Ping{1});
  EXPECT_EQ(echo.request<int>(Count{}).get(10s), 2);  // the send was handled before, in order

  // Remote spawn into a named host of the other node.
  ma::ActorRef spawned = a.spawn(peer, unique("hb1"), "echo", "e2");
  EXPECT_EQ(spawned.node(), peer);
  EXPECT_EQ(spawned.host(), unique("hb1"));
  EXPECT_EQ(spawned.request<int>(Ping{9}).get(10s), 10);
  EXPECT_THROW((void)a.spawn(peer, unique("hb1"), "no-such-type"), ma::UnknownActorType);

  // A ref travels inside a message: the remote actor asks back an actor here.
  ma::ActorRef local = ma::spawn("echo", unique("local-echo"));
  EXPECT_EQ(spawned.request<int>(Relay{local, 5}).get(10s), 6);
  EXPECT_EQ(local.request<int>(Count{}).get(10s), 1);

  // A missing actor there: noproc at once, not a timeout.
  try {
    (void)a.actor(peer, unique("hb1"), "ghost").request<int>(Ping{1}).get(10s);
    ADD_FAILURE() << "no error";
  } catch (const ma::ActorDown& e) {
    EXPECT_EQ(e.reason(), "noproc");
  }
  local.send(ma::PoisonPill{});
}

TEST(Node, MonitorsAcrossNodesSeeStopAndKill) {
  RemoteNode b(options_for("b2"), "", unique("hb2"));
  ma::Node a(options_for("a2"));
  const std::string peer = a.connect("127.0.0.1", b.port, 10s);
  ma::ActorRef x = a.spawn(peer, unique("hb2"), "echo", "x");
  ma::ActorRef y = a.spawn(peer, unique("hb2"), "echo", "y");
  auto mx = ma::monitor(x);
  auto my = ma::monitor(y);
  x.send(ma::PoisonPill{});
  y.kill();
  auto dx = mx.wait(10s);
  auto dy = my.wait(10s);
  ASSERT_TRUE(dx && dy);
  EXPECT_EQ(dx->kind, ma::DownKind::normal);
  EXPECT_EQ(dx->actor, x);
  EXPECT_EQ(dy->kind, ma::DownKind::killed);
  auto ghost = ma::monitor(a.actor(peer, unique("hb2"), "ghost")).wait(10s);
  ASSERT_TRUE(ghost);
  EXPECT_EQ(ghost->kind, ma::DownKind::noproc);
}

// Packets from another node for actors in the node's own process are
// handed to them on arrival (no mailbox hop): one sender's messages,
// requests, monitors and kills keep their order.
TEST(Node, PacketsForTheNodeProcessKeepTheirOrderPerSender) {
  RemoteNode b(options_for("b11"));
  ma::Node a(options_for("a11"));
  const std::string peer = a.connect("127.0.0.1", b.port, 10s);
  ma::ActorRef echo = a.actor(peer, "echo");
  for (int i = 0; i < 3000; ++i) echo.send(Ping{i});
  EXPECT_EQ(echo.request<int>(Count{}).get(30s), 3000);  // every send handled before the request
  for (int i = 0; i < 500; ++i) echo.send(Ping{i});
  auto m = ma::monitor(echo);
  echo.kill();  // after the monitor: its Down says killed, not noproc
  auto down = m.wait(10s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->kind, ma::DownKind::killed);
}

// A frame for a host whose mailbox is full cannot be handed over as it
// arrives (CAF's network thread never waits): it waits for room in the
// node's gateway, and the frames behind it follow it there. One sender's
// messages arrive complete and in order, to a host of the peer's tree and to
// the peer's node process alike.
TEST(Node, MessagesThatWaitForRoomKeepTheirOrder) {
  RemoteNode b(options_for("b12"), "", unique("hb12"), {"seq"},
               ma::HostOptions{}.with_mailbox(ma::MailboxOptions{}.with_capacity(4)));
  ma::Node a(options_for("a12"));
  const std::string peer = a.connect("127.0.0.1", b.port, 10s);
  ma::ActorRef in_host(peer, unique("hb12"), "seq", 0, 0);
  ma::ActorRef in_node = a.actor(peer, "echo");
  constexpr int kMessages = 3000;
  for (int i = 0; i < kMessages; ++i) {
    in_host.send(Seq{i});
    in_node.send(Seq{i});
  }
  // A request to each, then: the same sender, so after every Seq.
  EXPECT_EQ(in_host.request<int>(SeqNext{}).get(30s), kMessages);
  EXPECT_EQ(in_node.request<int>(SeqNext{}).get(30s), kMessages);
}

// Links across nodes behave as they do across processes
// (tests/actors/monitor_test.cpp): an abnormal stop stops the linked actor,
// or is an ExitSignal when it traps exits, in both directions; a normal stop
// does not propagate. A lost node is an abnormal stop: DownKind::node_down.
TEST(Node, LinksAcrossNodesPropagateAbnormalStopsAndNodeDown) {
  RemoteNode b(options_for("b7"), "", unique("hb7"));
  ma::Node a(options_for("a7"));
  const std::string peer = a.connect("127.0.0.1", b.port, 10s);
  const auto remote = [&](const std::string& name) { return a.spawn(peer, unique("hb7"), "linker", name); };
  const auto local = [&](const std::string& name) { return ma::spawn("linker", unique(name)); };
  struct Stop {  // the local actors go with the test, also on failure
    std::vector<ma::ActorRef> refs;
    ~Stop() {
      for (auto& r : refs) r.kill();
    }
  } stop;

  // Remote actor killed: the trapping local actor gets the ExitSignal and lives on.
  ma::ActorRef trap = local("l-trap"), t1 = remote("t1");
  stop.refs.push_back(trap);
  ASSERT_TRUE(trap.request<bool>(LinkTo{t1, true}).get(10s));
  t1.kill();
  EXPECT_EQ(wait_for_event(trap, "exit"), "exit killed t1");

  // Remote actor throws: the non-trapping local actor stops too (linked).
  ma::ActorRef plain = local("l-plain"), t2 = remote("t2");
  stop.refs.push_back(plain);
  auto m_plain = ma::monitor(plain);
  ASSERT_TRUE(plain.request<bool>(LinkTo{t2, false}).get(10s));
  EXPECT_THROW((void)t2.request<int>(Boom{}).get(10s), ma::RemoteError);
  auto d_plain = m_plain.wait(10s);
  ASSERT_TRUE(d_plain);
  EXPECT_EQ(d_plain->kind, ma::DownKind::linked);
  EXPECT_NE(d_plain->reason.find("boom"), std::string::npos) << d_plain->reason;

  // The other direction: the local actor killed stops the remote one.
  ma::ActorRef victim = local("l-victim"), t3 = remote("t3");
  auto m_t3 = ma::monitor(t3);
  ASSERT_TRUE(victim.request<bool>(LinkTo{t3, false}).get(10s));
  victim.kill();
  auto d_t3 = m_t3.wait(10s);
  ASSERT_TRUE(d_t3);
  EXPECT_EQ(d_t3->kind, ma::DownKind::linked);

  // A normal stop does not propagate.
  ma::ActorRef calm = local("l-calm"), t4 = remote("t4");
  stop.refs.push_back(calm);
  auto m_t4 = ma::monitor(t4);
  ASSERT_TRUE(calm.request<bool>(LinkTo{t4, false}).get(10s));
  t4.send(ma::PoisonPill{});
  ASSERT_TRUE(m_t4.wait(10s));
  EXPECT_EQ(calm.request<std::string>(LastEvent{}).get(10s), "none");

  // Node b killed: node_down, as an ExitSignal or as the reason of the stop.
  ma::ActorRef trap2 = local("l-trap2"), plain2 = local("l-plain2"), t5 = remote("t5"), t6 = remote("t6");
  stop.refs.push_back(trap2);
  stop.refs.push_back(plain2);
  auto m_plain2 = ma::monitor(plain2);
  ASSERT_TRUE(trap2.request<bool>(LinkTo{t5, true}).get(10s));
  ASSERT_TRUE(plain2.request<bool>(LinkTo{t6, false}).get(10s));
  b.kill();
  EXPECT_EQ(wait_for_event(trap2, "exit"), "exit node_down t5");
  auto d_plain2 = m_plain2.wait(10s);
  ASSERT_TRUE(d_plain2);
  EXPECT_EQ(d_plain2->kind, ma::DownKind::linked);
  EXPECT_NE(d_plain2->reason.find("node down"), std::string::npos) << d_plain2->reason;
  EXPECT_EQ(calm.request<std::string>(LastEvent{}).get(10s), "none");  // t4 had stopped normally before
}

TEST(Node, WrongSecretIsRefusedAndReachesNoActor) {
  RemoteNode b(options_for("b3"));
  {
    ma::Node intruder(options_for("intruder", "not-the-secret"));
    EXPECT_THROW((void)intruder.connect("127.0.0.1", b.port, 10s), ma::NodeError);
    EXPECT_TRUE(intruder.peers().empty());
    EXPECT_THROW((void)intruder.actor(unique("b3"), "echo"), ma::NodeDown);
  }
  // A raw CAF peer that skips the handshake: its frames are dropped.
  {
    caf::actor_system_config cfg;
    cfg.load<caf::io::middleman>();
    cfg.set("scheduler.max-threads", 1);
    caf::actor_system sys{cfg};
    auto gateway = sys.middleman().remote_actor("127.0.0.1", b.port);
    ASSERT_TRUE(gateway);
    caf::scoped_actor self{sys};
    self->send(*gateway, std::vector<char>(64, 'x'));
    self->send(*gateway, std::vector<char>{});
    // CAF lets any peer kill the published actor: only the doorman dies,
    // and it is replaced.
    caf::anon_send_exit(*gateway, caf::exit_reason::kill);
  }
  ma::Node a(options_for("a3"));
  std::string peer;
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (peer.empty() && std::chrono::steady_clock::now() < until) {
    try {
      peer = a.connect("127.0.0.1", b.port, 2s);
    } catch (const ma::NodeError&) {
      std::this_thread::sleep_for(20ms);  // the replacement doorman is being published
    }
  }
  ASSERT_FALSE(peer.empty());
  ma::ActorRef echo = a.actor(peer, "echo");
  EXPECT_EQ(echo.request<int>(Count{}).get(10s), 0);
}

TEST(Node, MessageLargerThanTheMaximumIsRefusedAtTheSender) {
  RemoteNode b(options_for("b4"));
  ma::Node a(options_for("a4").with_max_message_size(4096));
  const std::string peer = a.connect("127.0.0.1", b.port, 10s);
  ma::ActorRef echo = a.actor(peer, "echo");
  EXPECT_THROW(echo.send(Blob{std::vector<char>(8192, 'z')}), ma::MessageTooLarge);
  EXPECT_THROW((void)echo.request<int>(Blob{std::vector<char>(8192, 'z')}), ma::MessageTooLarge);
  EXPECT_EQ(echo.request<int>(Blob{std::vector<char>(1000, 'z')}).get(10s), 1000);
  EXPECT_EQ(echo.request<int>(Count{}).get(10s), 1);
}

TEST(Node, SigkillOfANodeIsSeenByTheOthers) {
  RemoteNode b(options_for("b5"), "", unique("hb5"));
  RemoteNode c(options_for("c5"));
  ma::Node a(options_for("a5"));
  const std::string pb = a.connect("127.0.0.1", b.port, 10s);
  const std::string pc = a.connect("127.0.0.1", c.port, 10s);
  ma::ActorRef on_b = a.spawn(pb, unique("hb5"), "echo", "w");
  auto m = ma::monitor(on_b);
  auto hanging = on_b.request<int>(Hang{});
  EXPECT_FALSE(hanging.wait(100ms));
  const auto t0 = std::chrono::steady_clock::now();
  b.kill();
  auto down = m.wait(5s);
  const auto detected = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(down);
  EXPECT_EQ(down->kind, ma::DownKind::node_down) << ma::to_string(down->kind);
  EXPECT_NE(down->reason.find("node down"), std::string::npos) << down->reason;
  EXPECT_LT(detected, 2s);
  EXPECT_THROW((void)hanging.get(100ms), ma::NodeDown);
  EXPECT_THROW((void)on_b.request<int>(Ping{1}).get(100ms), ma::NodeDown);
  EXPECT_FALSE(a.is_connected(pb));
  EXPECT_EQ(a.actor(pc, "echo").request<int>(Ping{1}).get(10s), 2);  // the others are fine
  std::printf("[ figures ] SIGKILL of a node seen after %.1f ms\n",
              std::chrono::duration<double, std::milli>(detected).count());
}

// A peer this node connected to comes back on the same address and port (a
// new process): the node reconnects by itself, and the ref to the named
// actor in b's host works again without a call to connect(). Node a runs in
// a driver child: b's new process is forked here, from a process that is no
// node (a forked child would inherit a's node).
TEST(Node, ReconnectsByItselfToAPeerThatComesBackOnTheSamePort) {
  const std::string host_b = unique("hrb");
  std::optional<RemoteNode> b;
  b.emplace(options_for("b8"), "", host_b, std::vector<std::string>{"w"});
  const std::uint16_t port = b->port;
  const auto options_a = options_for("a8").with_reconnect(50ms, 400ms);
  Signal ready;  // a is connected and watches w: kill and restart b
  Child driver([&]() -> int {
    ma::Node a(options_a);
    const std::string pb = a.connect("127.0.0.1", port, 10s);
    ma::ActorRef w = a.actor(pb, host_b, "w");
    NODE_CHECK(w.request<int>(Ping{1}).get(10s) == 2);
    auto m = ma::monitor(w);
    ready.notify();
    auto down = m.wait(5s);
    NODE_CHECK(down && down->kind == ma::DownKind::node_down);
    // No connect() here: poll the ref until the deadline (b is restarting,
    // attempts fail meanwhile and back off).
    const auto t0 = std::chrono::steady_clock::now();
    int answer = 0;
    while (answer == 0 && std::chrono::steady_clock::now() - t0 < 15s) {
      try {
        answer = w.request<int>(Ping{2}).get(5s);
      } catch (const ma::ActorDown&) {
        // NodeDown: not reconnected yet; noproc: b listens, but its host
        // has not made w again yet.
        std::this_thread::sleep_for(20ms);
      }
    }
    NODE_CHECK(answer == 3);
    NODE_CHECK(a.is_connected(pb));
    NODE_CHECK(a.actor(pb, "echo").request<int>(Ping{3}).get(10s) == 4);  // the new node process
    std::printf("[ figures ] reconnected by itself %.1f ms after b was lost\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    return 0;
  });
  ASSERT_TRUE(ready.wait(30s));
  b->kill();
  b.reset();  // reaped
  b.emplace(options_for("b8").with_address("127.0.0.1", port), "", host_b, std::vector<std::string>{"w"});
  EXPECT_EQ(driver.join(60s), 0);
}

// Reconnecting is on by default but can be turned off: then the peer stays
// down until connect() is called.
TEST(Node, WithoutReconnectALostPeerStaysDownUntilConnectIsCalled) {
  EXPECT_GT(ma::NodeOptions{}.reconnect_interval.count(), 0);
  std::optional<RemoteNode> b;
  b.emplace(options_for("b9"));
  const std::uint16_t port = b->port;
  const auto options_a = options_for("a9").with_reconnect(0ms, 0ms);
  Signal ready, restarted;
  Child driver([&]() -> int {
    ma::Node a(options_a);
    const std::string pb = a.connect("127.0.0.1", port, 10s);
    auto m = ma::monitor(a.actor(pb, "echo"));
    ready.notify();
    NODE_CHECK(m.wait(5s));
    NODE_CHECK(restarted.wait(30s));
    // Nothing to wait for: a reconnecting node would be back within a few
    // intervals of 250 ms, this one must still be apart after six.
    std::this_thread::sleep_for(1500ms);
    NODE_CHECK(!a.is_connected(pb));
    NODE_CHECK(a.connect("127.0.0.1", port, 10s) == pb);
    NODE_CHECK(a.actor(pb, "echo").request<int>(Ping{1}).get(10s) == 2);
    return 0;
  });
  ASSERT_TRUE(ready.wait(30s));
  b->kill();
  b.reset();
  b.emplace(options_for("b9").with_address("127.0.0.1", port));
  restarted.notify();
  EXPECT_EQ(driver.join(60s), 0);
}

// ---- TLS (certificates made now with the openssl command, in a temp dir:
// tests/support/test_certificates.hpp)

using mpx::test::make_pki;
using mpx::test::TempDir;

TEST(Node, TlsWithCertificatesWorksAndAForeignCertificateIsRefused) {
  TempDir dir;
  make_pki(dir, "good-");
  make_pki(dir, "rogue-");
  auto tls = [&](const std::string& name, const std::string& prefix, const std::string& ca_prefix) {
    return options_for(name).with_tls(dir.file(prefix + "node.pem"), dir.file(prefix + "node.key"),
                                      dir.file(ca_prefix + "ca.pem"));
  };
  RemoteNode b(tls("b6", "good-", "good-"));
  {
    ma::Node a(tls("a6", "good-", "good-"));
    EXPECT_TRUE(a.tls());
    const std::string peer = a.connect("127.0.0.1", b.port, 10s);
    EXPECT_EQ(a.actor(peer, "echo").request<int>(Ping{1}).get(10s), 2);
  }
  // A certificate from another CA: the TLS handshake fails, nothing reaches an actor.
  {
    ma::Node rogue(tls("rogue6", "rogue-", "good-"));
    EXPECT_THROW((void)rogue.connect("127.0.0.1", b.port, 5s), ma::NodeError);
    EXPECT_TRUE(rogue.peers().empty());
  }
  ma::Node c(tls("c6", "good-", "good-"));
  const std::string peer = c.connect("127.0.0.1", b.port, 10s);
  EXPECT_EQ(c.actor(peer, "echo").request<int>(Count{}).get(10s), 1);
}

// ---- network namespaces (each node in its own, joined by a test-made switch)

namespace {
constexpr std::uint16_t kNsPort = 7411;  // the namespaces are ours: a fixed port is free there

// Runs `body` as node `index`'s driver in its namespace; its checks fail the exit code.
int run_driver(const NetNamespaces& net, int index, const std::function<int()>& body) {
  Child driver([&net, index, &body]() -> int {
    try {
      NetNamespaces::enter(net.name(index));
      return body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "driver: %s\n", e.what());
      return 97;
    }
  });
  return driver.join(120s);
}
}  // namespace

TEST(NodeNetns, ThreeNodesRequestsAndMonitorsOverVeth) {
  if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  NetNamespaces net(3, 1);
  const std::string host_b = unique("hnb");
  const auto options_a = options_for("na").with_address(net.address(0), kNsPort);  // names made here, not in the child
  RemoteNode b(options_for("nb").with_address(net.address(1), kNsPort), net.name(1), host_b);
  RemoteNode c(options_for("nc").with_address(net.address(2), kNsPort), net.name(2));
  const int code = run_driver(net, 0, [&]() -> int {
    ma::Node a(options_a);
    const std::string pb = a.connect(net.address(1), kNsPort, 10s);
    const std::string pc = a.connect(net.address(2), kNsPort, 10s);
    NODE_CHECK(a.actor(pb, "echo").request<int>(Ping{1}).get(10s) == 2);
    NODE_CHECK(a.actor(pc, "echo").request<int>(Ping{2}).get(10s) == 3);
    // An actor on b asks c's echo through a: refs travel qualified.
    ma::ActorRef w = a.spawn(pb, host_b, "echo", "w");
    NODE_CHECK(w.request<int>(Relay{a.actor(pc, "echo"), 7}).get(10s) == -1);  // b is not connected to c
    auto m = ma::monitor(w);
    w.send(ma::PoisonPill{});
    auto down = m.wait(10s);
    NODE_CHECK(down && down->kind == ma::DownKind::normal);
    return 0;
  });
  EXPECT_EQ(code, 0);
}

// Issue 13. A process that enters a network namespace gets a shared-memory
// tracker of its own there (the tracker's socket is per namespace), while
// /dev/shm and the tracker's table are shared by all. Processes of this
// namespace that came and went afterwards (in CI: the tests running beside)
// were then taken by this namespace's tracker for holders of node b's
// segments: it unlinked b's outbound mailbox, and the first reply of b's host
// (the only sender that opens it by name, at its first message to another
// node) was lost. Here such processes come and go on purpose. Fixed in the
// tracker: a tracker that cannot lock the table file keeps a private one.
TEST(NodeNetns, FirstRequestToAHostIsAnsweredWhileProcessesOfAnotherNamespaceComeAndGo) {
  if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  // This namespace's tracker runs, with this process as a client, before b's starts.
  auto held = mpx::SharedMemory::create(4096);
  struct Unlink {
    mpx::SharedMemory& segment;
    ~Unlink() {
      try {
        segment.unlink();
      } catch (const mpx::Error&) {
      }
    }
  } unlink_held{held};
  NetNamespaces net(2, 3);
  const std::string host_b = unique("hqb");
  const auto options_a = options_for("qa").with_address(net.address(0), kNsPort);
  RemoteNode b(options_for("qb").with_address(net.address(1), kNsPort), net.name(1), host_b, {"w"});
  {
    // Processes here, each a tracker client, all at once; then they are killed.
    constexpr int kPassers = 32;
    Signal ready;
    std::vector<std::unique_ptr<Child>> passers;
    for (int i = 0; i < kPassers; ++i)
      passers.push_back(std::make_unique<Child>([&ready]() -> int {
        auto segment = mpx::SharedMemory::create(4096);
        ready.notify();
        (void)Signal().wait(60s);  // until killed
        return 0;
      }));
    for (int i = 0; i < kPassers; ++i) ASSERT_TRUE(ready.wait(30s)) << "passer " << i << " did not start";
    for (auto& p : passers) {
      p->kill();
      (void)p->join(10s);
    }
  }
  // Two round trips with the tracker: the passers' ends were queued before
  // the first, so they are handled before the second is answered.
  (void)mpx::detail::shm_tracker::tracker_pid();
  (void)mpx::detail::shm_tracker::tracker_pid();
  const int code = run_driver(net, 0, [&]() -> int {
    ma::Node a(options_a);
    const std::string pb = a.connect(net.address(1), kNsPort, 10s);
    NODE_CHECK(a.actor(pb, host_b, "w").request<int>(Ping{2}).get(5s) == 3);
    NODE_CHECK(a.spawn(pb, host_b, "echo", "w2").request<int>(Ping{3}).get(5s) == 4);
    return 0;
  });
  EXPECT_EQ(code, 0);
}

TEST(NodeNetns, CutLinkIsDetectedRequestsFailFastAndReconnectWorks) {
  if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  NetNamespaces net(2, 2);
  const std::string host_b = unique("hcb");
  const auto options_a = options_for("ca").with_address(net.address(0), kNsPort);
  // The named actor in b's host is made by b itself (remote spawn has its
  // own test, Node.RequestResponseNamesAndRemoteSpawnAcrossTwoNodes).
  RemoteNode b(options_for("cb").with_address(net.address(1), kNsPort), net.name(1), host_b, {"w"});
  const int code = run_driver(net, 0, [&]() -> int {
    ma::Node a(options_a);
    const std::string pb = a.connect(net.address(1), kNsPort, 10s);
    ma::ActorRef echo = a.actor(pb, "echo");
    NODE_CHECK(echo.request<int>(Ping{1}).get(10s) == 2);
    ma::ActorRef w = a.actor(pb, host_b, "w");
    NODE_CHECK(w.request<int>(Ping{2}).get(10s) == 3);
    auto m = ma::monitor(w);
    auto hanging = echo.request<int>(Hang{});
    NODE_CHECK(!hanging.wait(100ms));

    const auto t0 = std::chrono::steady_clock::now();
    net.cut(1);
    auto down = m.wait(5s);
    const auto detected = std::chrono::steady_clock::now() - t0;
    NODE_CHECK(down.has_value());
    NODE_CHECK(down->kind == ma::DownKind::node_down);
    NODE_CHECK(down->reason.find("node down") != std::string::npos);
    NODE_CHECK(detected < 2s);
    // Pending and new requests fail at once.
    const auto t1 = std::chrono::steady_clock::now();
    bool node_down = false;
    try {
      (void)hanging.get(5s);
    } catch (const ma::NodeDown&) {
      node_down = true;
    }
    NODE_CHECK(node_down);
    node_down = false;
    try {
      (void)echo.request<int>(Ping{1}).get(5s);
    } catch (const ma::NodeDown&) {
      node_down = true;
    }
    NODE_CHECK(node_down);
    NODE_CHECK(std::chrono::steady_clock::now() - t1 < 200ms);
    NODE_CHECK(!a.is_connected(pb));
    bool refused = false;
    try {
      (void)a.connect(net.address(1), kNsPort, 500ms);
    } catch (const ma::NodeError&) {
      refused = true;
    }
    NODE_CHECK(refused);  // still cut: a bounded failure, not a hang

    net.restore(1);
    NODE_CHECK(a.connect(net.address(1), kNsPort, 10s) == pb);
    NODE_CHECK(echo.request<int>(Ping{5}).get(10s) == 6);
    NODE_CHECK(w.request<int>(Ping{6}).get(10s) == 7);  // the named actor in the host, reachable again
    std::printf("[ figures ] cut link detected after %.1f ms\n",
                std::chrono::duration<double, std::milli>(detected).count());

    // Cut again and restore: this time the node reconnects by itself.
    auto m2 = ma::monitor(w);
    net.cut(1);
    auto down2 = m2.wait(5s);
    NODE_CHECK(down2 && down2->kind == ma::DownKind::node_down);
    net.restore(1);
    const auto t2 = std::chrono::steady_clock::now();
    int answer = 0;
    while (answer == 0 && std::chrono::steady_clock::now() - t2 < 15s) {
      try {
        answer = w.request<int>(Ping{7}).get(5s);
      } catch (const ma::NodeDown&) {
        std::this_thread::sleep_for(20ms);  // not reconnected yet
      }
    }
    NODE_CHECK(answer == 8);
    NODE_CHECK(a.is_connected(pb));
    std::printf("[ figures ] reconnected by itself %.1f ms after the link was restored\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t2).count());
    return 0;
  });
  EXPECT_EQ(code, 0);
}

// ---- supervised hosts on another node (ChildSpec::host(...).with_node)

namespace {
// The ExitReports a supervisor makes, one Signal byte each (on_exit runs on its watcher thread).
ma::SupervisorOptions signalling(const Signal& exits, ma::SupervisorOptions options) {
  return std::move(options).with_on_exit([&exits](const ma::ExitReport&) { exits.notify(); });
}
bool process_gone(pid_t pid, std::chrono::milliseconds within) {
  const auto until = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < until) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::this_thread::sleep_for(10ms);  // the other node reaps it on its own thread
  }
  return false;
}
}  // namespace

// A host child on node b, supervised from node a: its actor answers through
// Supervisor::actor; SIGKILL of the host process (b's child) is reported with
// the signal and restarted with its mailbox, so messages sent while it was
// down are handled by the new process; stop() stops it there and releases it.
TEST(NodeSupervisor, HostOnAnotherNodeRestartsKeepsItsMailboxAndReportsTheSignal) {
  RemoteNode b(options_for("sb1"));
  ma::Node a(options_for("sa1"));
  const std::string peer = a.connect("127.0.0.1", b.port, 10s);
  const std::string id = unique("rh1");
  Signal exits;
  // The restart waits 1 s: the test's messages are sent while the host is down
  // (or, on a very slow machine, after: the count below holds either way).
  ma::Supervisor sup("rsup1",
                     signalling(exits, ma::SupervisorOptions().with_intensity(5, 60s).with_backoff(ma::Backoff{1000ms, 1000ms, 0.0, 60s})),
                     {ma::ChildSpec::host(id, ma::HostOptions(), {ma::ActorSpec::make("echo", "e")}).with_node(peer)});
  ma::ActorRef e = sup.actor(id, "e");
  EXPECT_EQ(e.node(), peer);
  EXPECT_EQ(e.request<int>(Ping{1}).get(10s), 2);
  EXPECT_THROW((void)sup.host(id), ma::ActorError);
  auto children = sup.which_children();
  ASSERT_EQ(children.size(), 1u);
  EXPECT_EQ(children[0].state, "running");
  const pid_t first = children[0].pid;
  ASSERT_GT(first, 0);
  auto snap = sup.snapshot();
  ASSERT_EQ(snap.children.size(), 1u);
  EXPECT_EQ(snap.children[0].node, peer);
  EXPECT_EQ(snap.children[0].pid, first);

  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_EQ(exits.wait(20s), 'x');
  auto reports = sup.reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].pid, first);
  EXPECT_EQ(reports[0].exit_code, -SIGKILL);
  EXPECT_EQ(reports[0].how, "killed by signal");
  for (int i = 0; i < 100; ++i) e.send(Ping{i});  // they wait in the mailbox there
  // A request to a host that is down fails at once (as from this tree): ask
  // once the supervisor has restarted it.
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < until &&
         !(sup.which_children()[0].state == "running" && sup.which_children()[0].restarts == 1))
    std::this_thread::sleep_for(10ms);  // polling a state that changes on its own
  // The restarted process handled those (a fresh echo counts from 0), and at
  // most one more: the record in hand at the kill (Ping{1}, answered but not
  // yet completed) is redelivered, as docs/actors.md defines.
  const int handled = e.request<int>(Count{}).get(20s);
  EXPECT_GE(handled, 100);
  EXPECT_LE(handled, 101);
  children = sup.which_children();
  EXPECT_EQ(children[0].restarts, 1u);
  EXPECT_NE(children[0].pid, first);
  const pid_t second = children[0].pid;

  sup.stop();
  reports = sup.reports();
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[1].how, "stopped by the supervisor");
  EXPECT_EQ(reports[1].exit_code, 0);
  EXPECT_TRUE(process_gone(second, 10s));
  // Released there: the name is free, requests to it fail at once.
  EXPECT_THROW((void)e.request<int>(Ping{1}).get(10s), ma::ActorDown);
}

// A whole node lost under a supervisor: the child ends "node down", the
// restart cannot reach the node and counts as another exit, and intensity
// makes the supervisor give up (instead of failing at the first try).
TEST(NodeSupervisor, LostNodeEndsTheChildAndFailedRestartsCountAgainstIntensity) {
  RemoteNode b(options_for("sb2"));
  ma::Node a(options_for("sa2").with_reconnect(0ms, 0ms));
  const std::string peer = a.connect("127.0.0.1", b.port, 10s);
  Signal exits;
  ma::Supervisor sup("rsup2", signalling(exits, ma::SupervisorOptions().with_intensity(2, 60s)),
                     {ma::ChildSpec::host(unique("rh2"), ma::HostOptions(), {ma::ActorSpec::make("echo", "e")})
                          .with_node(peer)});
  EXPECT_EQ(sup.actor(unique("rh2"), "e").request<int>(Ping{1}).get(10s), 2);
  b.kill();
  EXPECT_TRUE(sup.wait_failed(20s)) << "the supervisor did not give up";
  auto reports = sup.reports();
  ASSERT_EQ(reports.size(), 3u);  // the loss, then two restarts that could not reach the node
  EXPECT_EQ(reports[0].how.rfind("node down", 0), 0u) << reports[0].how;
  EXPECT_FALSE(reports[0].exit_code);
  EXPECT_EQ(reports[1].how.rfind("could not start", 0), 0u) << reports[1].how;
  EXPECT_NE(sup.failure().find("intensity"), std::string::npos) << sup.failure();
}

// A host kept for a supervisor whose node is gone for good (SIGKILLed, no
// reconnect) is shut down by its keeper once that node has been down for
// orphan_host_timeout (1 s here; heartbeats see the loss within 1.5 s).
TEST(NodeSupervisor, AHostWhoseSupervisorsNodeIsGoneIsShutDownAfterTheOrphanTimeout) {
  RemoteNode b(options_for("sb5").with_orphan_host_timeout(1000ms));
  const std::uint16_t port = b.port;
  const std::string id = unique("rh5");
  PortPipe host_pid;
  Signal stop;
  Child a([&]() -> int {
    ma::Node node(options_for("sa5").with_reconnect(0ms, 0ms));
    const std::string peer = node.connect("127.0.0.1", port, 10s);
    ma::Supervisor sup("rsup5", ma::SupervisorOptions(),
                       {ma::ChildSpec::host(id, ma::HostOptions(), {ma::ActorSpec::make("echo", "e")}).with_node(peer)});
    NODE_CHECK(sup.actor(id, "e").request<int>(Ping{1}).get(10s) == 2);
    host_pid.send_pid(sup.which_children()[0].pid);
    (void)stop.wait(120s);
    return 0;
  });
  const pid_t pid = host_pid.wait_pid();
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(mpx::test::pid_exists(pid));
  a.kill();
  (void)a.join();
  EXPECT_TRUE(process_gone(pid, 20s)) << "the orphaned host still runs";
}

// Only host children can run on another node; a host child on another node
// needs this tree's Node: both are ActorErrors at construction.
TEST(NodeSupervisor, OnlyHostsRunOnAnotherNodeAndOnlyWithANode) {
  EXPECT_THROW(ma::Supervisor("rsup3", ma::SupervisorOptions(),
                              {ma::ChildSpec::host("rh3", ma::HostOptions(), {}).with_node("elsewhere")}),
               ma::ActorError);
  ma::Node a(options_for("sa3"));
  EXPECT_THROW(ma::Supervisor("rsup4", ma::SupervisorOptions(),
                              {ma::ChildSpec::process("p", [] {}).with_node("elsewhere")}),
               ma::ActorError);
}

// Issue 13: a supervised host on node b while the link a-b is cut. a sees the
// child end "node down" and its restarts fail while the link is down (they
// count, with backoff); the host itself runs on. Once the link is back and a
// has reconnected by itself, the next restart takes the running host back:
// same pid, no stop, its actor's state kept.
TEST(NodeNetns, SupervisedHostOnAnotherNodeOutlivesACutLinkAndIsTakenBack) {
  if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  NetNamespaces net(2, 5);
  const auto options_a = options_for("ka").with_address(net.address(0), kNsPort);
  const std::string id = unique("hkb");
  RemoteNode b(options_for("kb").with_address(net.address(1), kNsPort), net.name(1));
  const int code = run_driver(net, 0, [&]() -> int {
    ma::Node a(options_a);
    const std::string pb = a.connect(net.address(1), kNsPort, 10s);
    Signal exits;
    ma::Supervisor sup("rsup5",
                       signalling(exits, ma::SupervisorOptions().with_intensity(50, 60s).with_backoff(
                                             ma::Backoff{200ms, 800ms, 0.0, 60s})),
                       {ma::ChildSpec::host(id, ma::HostOptions(), {ma::ActorSpec::make("echo", "e")}).with_node(pb)});
    ma::ActorRef e = sup.actor(id, "e");
    NODE_CHECK(e.request<int>(Ping{1}).get(10s) == 2);
    const pid_t pid = sup.which_children().at(0).pid;

    net.cut(1);
    NODE_CHECK(exits.wait(10s) == 'x');
    const auto lost = sup.reports().at(0);
    NODE_CHECK(lost.how.rfind("node down", 0) == 0);
    NODE_CHECK(!lost.exit_code);
    net.restore(1);
    // Reconnecting (a's own thread) and the next restart (backoff <= 800 ms) take a few seconds.
    const auto until = std::chrono::steady_clock::now() + 20s;
    bool back = false;
    while (!back && std::chrono::steady_clock::now() < until) {
      const auto c = sup.which_children().at(0);
      back = c.state == "running" && c.pid == pid;
      if (!back) std::this_thread::sleep_for(50ms);  // polling a state that changes on its own
    }
    NODE_CHECK(back);
    NODE_CHECK(!sup.failed());
    NODE_CHECK(e.request<int>(Count{}).get(10s) == 1);  // the same process: Ping{1} was counted there
    for (const auto& r : sup.reports()) NODE_CHECK(r.how != "stopped by the supervisor");
    sup.stop();
    NODE_CHECK(sup.reports().back().how == "stopped by the supervisor");
    NODE_CHECK(sup.reports().back().exit_code == 0);
    return 0;
  });
  EXPECT_EQ(code, 0);
}

// A monitor from node a on an actor in a host of node b fires when that host
// process is SIGKILLed, with the signal as exit code, and a request in hand
// there fails at once: the watchers and the request died with the host, so
// b's node answers in its place (it remembers what came in until answered).
TEST(Node, MonitorAndRequestAcrossNodesFailFastWhenTheRemoteHostIsSigkilled) {
  RemoteNode b(options_for("b9"), "", unique("hb9"));
  ma::Node a(options_for("a9"));
  const std::string peer = a.connect("127.0.0.1", b.port, 10s);
  ma::ActorRef x = a.spawn(peer, unique("hb9"), "echo", "x");
  ASSERT_GT(x.pid(), 0);
  EXPECT_EQ(x.request<int>(Ping{1}).get(10s), 2);
  auto m = ma::monitor(x);
  auto hanging = x.request<int>(Hang{});
  EXPECT_FALSE(hanging.wait(100ms));  // in hand there
  EXPECT_FALSE(m.wait(0ms));
  const auto t_kill = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(x.pid(), SIGKILL), 0);
  EXPECT_THROW((void)hanging.get(10s), ma::ActorDown);
  const auto failed_after = std::chrono::steady_clock::now() - t_kill;
  EXPECT_LT(failed_after, 2s);
  std::printf("[ figures ] a request in hand failed %.1f ms after its remote host's SIGKILL\n",
              std::chrono::duration<double, std::milli>(failed_after).count());
  auto down = m.wait(10s);
  ASSERT_TRUE(down) << "no Down after the remote host was SIGKILLed";
  EXPECT_EQ(down->kind, ma::DownKind::host_died);
  EXPECT_EQ(down->exit_code, -SIGKILL);
  // A request to it fails fast rather than at its timeout.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW((void)x.request<int>(Ping{2}).get(10s), ma::ActorDown);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

// A burst of one-way messages into a small mailbox on b, whose actor is slow,
// keeps b's gateway busy for seconds (each frame waits for room). Heartbeats
// have an actor of their own, so they still flow both ways and neither node
// takes the other for silent (before: b's heartbeats queued behind the frames
// and a declared b down after the timeout, then b's other traffic was lost).
TEST(Node, HeartbeatsFlowWhileTheGatewayIsBackloggedByABurst) {
  PortPipe port;
  Signal stop;
  const auto options_b = options_for("b10").with_heartbeat(100ms, 600ms);
  const std::string host = unique("hb10");
  Child b([&]() -> int {
    ma::Node node(options_b);
    ma::spawn("echo", "echo");
    ma::Host slow(host, ma::HostOptions().with_mailbox(ma::MailboxOptions().with_capacity(8).with_in_flight(1)));
    slow.spawn("echo", "sleepy");
    port.send(node.port());
    (void)stop.wait(120s);
    return 0;
  });
  const std::uint16_t b_port = port.wait();
  ASSERT_NE(b_port, 0);
  ma::Node a(options_for("a10").with_heartbeat(100ms, 600ms));
  const std::string peer = a.connect("127.0.0.1", b_port, 10s);
  auto m = ma::monitor(a.actor(peer, "echo"));
  ma::ActorRef sleepy = a.actor(peer, host, "sleepy");
  for (int i = 0; i < 60; ++i) sleepy.send(Nap{50});  // about 3 s of work behind a mailbox of 8
  auto down = m.wait(2500ms);
  EXPECT_FALSE(down) << "b was taken for silent: " << down->reason;
  EXPECT_TRUE(a.is_connected(peer));
  EXPECT_EQ(sleepy.request<int>(Count{}).get(20s), 60);  // and nothing of the burst was lost
  stop.notify();
  EXPECT_EQ(b.join(20s), 0);
}

// A nested supervisor (its own process of a's tree, forked, and under
// forkserver: its spec travels with the host's node) supervises a host on
// node b: requests and monitors from that process reach b through a's node.
TEST(NodeSupervisor, NestedSupervisorInItsOwnProcessRunsAHostOnAnotherNode) {
  RemoteNode b(options_for("sb6"));
  ma::Node a(options_for("sa6"));
  const std::string peer = a.connect("127.0.0.1", b.port, 10s);
  for (auto method : {mpx::StartMethod::fork, mpx::StartMethod::forkserver}) {
    const std::string id = unique(method == mpx::StartMethod::fork ? "rh6f" : "rh6s");
    ma::Supervisor sup(
        "rsup6", ma::SupervisorOptions(),
        {ma::ChildSpec::supervisor(
             "inner6", ma::SupervisorOptions(),
             {ma::ChildSpec::host(id, ma::HostOptions(), {ma::ActorSpec::make("echo", "e")}).with_node(peer)})
             .with_start_method(method)});
    // The inner supervisor starts the host there on its own: ask until it answers.
    ma::ActorRef e(peer, id, "e", 0, 0);
    int answer = 0;
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (answer == 0 && std::chrono::steady_clock::now() < until) {
      try {
        answer = e.request<int>(Ping{41}).get(5s);
      } catch (const ma::ActorDown&) {
        std::this_thread::sleep_for(20ms);  // not started yet there
      }
    }
    EXPECT_EQ(answer, 42) << mpx::to_string(method);
    sup.stop();  // the inner supervisor stops and releases its host on b
    EXPECT_THROW((void)e.request<int>(Ping{1}).get(10s), ma::ActorDown) << mpx::to_string(method);
  }
}
