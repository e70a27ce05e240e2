// Hosts, spawning, send and request, errors, shutdown: real worker processes.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include <atomic>
#include <chrono>
#include <set>
#include <sstream>
#include <string>

#include "mpx/actors.hpp"
#include "mpx/logging.hpp"
#include "mpx/sharedctypes.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;

namespace {

struct Add {
  int a = 0, b = 0;
  template <class A>
  void serialize(A& ar) {
    ar(a, b);
  }
};
struct Fail {
  std::string why;
  template <class A>
  void serialize(A& ar) {
    ar(why);
  }
};
struct Unknown {
  int x = 0;
  template <class A>
  void serialize(A& ar) {
    ar(x);
  }
};
struct Record {
  int value = 0;
  template <class A>
  void serialize(A& ar) {
    ar(value);
  }
};
struct Total {
  template <class A>
  void serialize(A&) {}
};
struct Whoami {
  template <class A>
  void serialize(A&) {}
};
struct Sleep {
  int ms = 0;
  template <class A>
  void serialize(A& ar) {
    ar(ms);
  }
};

struct Say {
  std::string text;
  template <class A>
  void serialize(A& ar) {
    ar(text);
  }
};

ma::Behavior adder(ma::Context&) {
  return {
      [](const Say& m) {
        mpx::get_logger()->warn("{}", m.text);
        return true;
      },
      [](const Add& m) { return m.a + m.b; },
      [](const Fail& m) -> int { throw std::invalid_argument(m.why); },
      [](const Sleep& m) {
        std::this_thread::sleep_for(std::chrono::milliseconds(m.ms));
        return m.ms;
      },
  };
}
MPX_REGISTER_ACTOR(adder);

ma::Behavior scaler(ma::Context& self, int factor, std::string label) {
  return {
      [factor](const Add& m) { return factor * (m.a + m.b); },
      [&self, label](const Whoami&) { return label + "@" + self.host() + "/" + self.name(); },
  };
}
MPX_REGISTER_ACTOR(scaler);

class Accumulator : public ma::Actor {
 public:
  Accumulator(ma::Context& self, int start) : Actor(self), total_(start) {}
  ma::Behavior behavior() override {
    return {
        [this](const Record& r) { total_ += r.value; },
        [this](const Total&) { return total_; },
    };
  }

 private:
  int total_;
};
MPX_REGISTER_ACTOR_CLASS(Accumulator, int);

}  // namespace

TEST(Host, SpawnRequestAndSendAcrossProcesses) {
  ma::Host worker("host-basic");
  EXPECT_TRUE(worker.is_alive());
  EXPECT_NE(worker.pid(), ::getpid());
  auto a = worker.spawn("adder", "adder-1");
  EXPECT_EQ(a.host(), "host-basic");
  EXPECT_EQ(a.name(), "adder-1");
  EXPECT_EQ(a.request<int>(Add{1, 2}).get(10s), 3);
  a.send(Add{3, 4});  // fire and forget: no reply expected, nothing breaks
  EXPECT_EQ(a.request<int>(Add{20, 22}).get(10s), 42);
  std::ostringstream text;
  text << a;
  EXPECT_EQ(text.str(), "<actor adder-1 on host-basic pid " + std::to_string(worker.pid()) + ">");
  worker.shutdown();
  EXPECT_EQ(worker.exitcode(), 0);
}

TEST(Host, FunctionActorWithArgumentsAndClassActorWithState) {
  ma::Host worker("host-args");
  auto s = worker.spawn("scaler", "s", 10, std::string("ten"));
  EXPECT_EQ(s.request<int>(Add{1, 2}).get(10s), 30);
  EXPECT_EQ(s.request<std::string>(Whoami{}).get(10s), "ten@host-args/s");
  auto acc = worker.spawn("Accumulator", "", 100);
  EXPECT_TRUE(acc.name().empty());
  for (int i = 1; i <= 10; ++i) acc.send(Record{i});
  EXPECT_EQ(acc.request<int>(Total{}).get(10s), 155);  // in order after the sends from this thread
}

TEST(Host, SpawnErrorsAreTypedAndImmediate) {
  ma::Host worker("host-spawn-errors");
  EXPECT_THROW(worker.spawn("no-such-type"), ma::UnknownActorType);
  EXPECT_THROW(worker.spawn("scaler", "x", 1), ma::ActorError);               // missing argument
  EXPECT_THROW(worker.spawn("scaler", "x", 1.5, std::string("y")), ma::ActorError);  // wrong type
  EXPECT_THROW(worker.spawn("adder", "bad name!"), ma::ActorError);
  worker.spawn("adder", "dup");
  EXPECT_THROW(worker.spawn("adder", "dup"), ma::ActorError);
  EXPECT_THROW(ma::Host("host-spawn-errors"), ma::ActorError);  // one host per name
}

TEST(Host, HandlerExceptionReachesRequesterAsRemoteError) {
  ma::Host worker("host-remote-error");
  auto a = worker.spawn("adder", "a");
  try {
    (void)a.request<int>(Fail{"bad input"}).get(10s);
    FAIL() << "no exception";
  } catch (const ma::RemoteError& e) {
    EXPECT_EQ(e.type(), "std::invalid_argument");
    EXPECT_EQ(e.message(), "bad input");
  }
  // The actor crashed (let it crash): the next request fails fast with ActorDown.
  EXPECT_THROW((void)a.request<int>(Add{1, 1}).get(10s), ma::ActorDown);
}

TEST(Host, UnhandledMessageFailsTheRequestAtOnce) {
  ma::Host worker("host-unhandled");
  auto a = worker.spawn("adder", "a");
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW((void)a.request<int>(Unknown{1}).get(30s), ma::Unhandled);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);  // not at the timeout
  EXPECT_EQ(a.request<int>(Add{2, 2}).get(10s), 4);            // and the actor lives on
}

TEST(Host, ReplyOfAnotherTypeIsATypedError) {
  ma::Host worker("host-reply-type");
  auto a = worker.spawn("adder", "a");
  EXPECT_THROW((void)a.request<std::string>(Add{1, 2}).get(10s), mpx::Error);
}

TEST(Host, RequestToMissingActorFailsWithActorDown) {
  ma::Host worker("host-noproc");
  try {
    (void)worker.actor("nobody").request<int>(Add{1, 2}).get(30s);
    FAIL() << "no exception";
  } catch (const ma::ActorDown& e) {
    EXPECT_EQ(e.reason(), "noproc");
  }
  EXPECT_THROW((void)ma::ActorRef("no-such-host", "x", 0, 0).request<int>(Add{}).get(30s), ma::ActorDown);
}

TEST(Host, RequestToSigkilledHostFailsFastWithActorDown) {
  ma::Host worker("host-killed");
  auto a = worker.spawn("adder", "a");
  auto response = a.request<int>(Sleep{60000});  // in hand when the host dies
  ASSERT_FALSE(response.wait(200ms));
  auto start = std::chrono::steady_clock::now();
  ::kill(worker.pid(), SIGKILL);
  try {
    (void)response.get(60s);
    FAIL() << "no exception";
  } catch (const ma::ActorDown& e) {
    EXPECT_NE(e.reason().find("died"), std::string::npos) << e.reason();
    EXPECT_NE(e.reason().find("-9"), std::string::npos) << e.reason();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);  // fail fast, not at the timeout (100 ms target: bench)
  // A new request to the dead host fails at once too.
  EXPECT_THROW((void)a.request<int>(Add{1, 1}).get(60s), ma::ActorDown);
}

TEST(Host, RequestTimeoutThrowsTimeoutError) {
  ma::Host worker("host-timeout");
  auto a = worker.spawn("adder", "a");
  EXPECT_THROW((void)a.request<int>(Sleep{300}).get(50ms), mpx::TimeoutError);
}

TEST(Host, ShutdownStopsActorsAfterQueuedMessagesAndExitsZero) {
  ma::Host worker("host-shutdown");
  auto acc = worker.spawn("Accumulator", "acc", 0);
  auto m = ma::monitor(acc);
  for (int i = 0; i < 1000; ++i) acc.send(Record{1});
  worker.shutdown();
  EXPECT_EQ(worker.exitcode(), 0);
  auto down = m.wait(10s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->kind, ma::DownKind::normal);
  EXPECT_THROW((void)acc.request<int>(Total{}).get(10s), ma::ActorDown);
}

TEST(Host, LocalActorsInTheMainProcess) {
  auto a = ma::spawn("adder", "local-adder");
  EXPECT_EQ(a.host(), "p" + std::to_string(::getpid()));
  EXPECT_EQ(a.request<int>(Add{5, 6}).get(10s), 11);
  EXPECT_THROW((void)a.request<int>(Unknown{}).get(10s), ma::Unhandled);
  a.send(ma::PoisonPill{});
  auto down = ma::monitor(a).wait(10s);
  ASSERT_TRUE(down);
}

TEST(Host, NothingIsWrittenToStdout) {
  // Everything below runs with fd 1 on a file; hosts forked meanwhile inherit it.
  std::fflush(stdout);
  char path[] = "/tmp/mpx-stdout-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  int saved = ::dup(1);
  ::dup2(fd, 1);
  {
    ma::Host worker("host-stdout");
    auto a = worker.spawn("adder", "a");
    a.send(Unknown{1});                                               // unexpected in another process
    EXPECT_THROW((void)a.request<int>(Unknown{2}).get(10s), ma::Unhandled);
    auto local = ma::spawn("adder", "stdout-local");
    local.send(Unknown{3});                                           // unexpected in this process
    EXPECT_THROW((void)local.request<int>(Fail{"x"}).get(10s), ma::RemoteError);
    EXPECT_EQ(a.request<int>(Add{1, 1}).get(10s), 2);
    worker.shutdown();
  }
  std::fflush(stdout);
  ::dup2(saved, 1);
  ::close(saved);
  struct stat st {};
  ::fstat(fd, &st);
  ::close(fd);
  ::unlink(path);
  EXPECT_EQ(st.st_size, 0);
}

TEST(Host, LogLinesOfAHandlerCarryHostPidAndActorName) {
  char path[] = "/tmp/mpx-stderr-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  int saved = ::dup(2);
  ::dup2(fd, 2);  // the host inherits it
  pid_t pid = 0;
  {
    ma::Host worker("host-log");
    pid = worker.pid();
    EXPECT_TRUE(worker.spawn("adder", "talker").request<bool>(Say{"hello from a handler"}).get(10s));
  }
  ::dup2(saved, 2);
  ::close(saved);
  std::string text(4096, '\0');
  ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  ::close(fd);
  ::unlink(path);
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  EXPECT_NE(text.find("[warning/host-log " + std::to_string(pid) + " talker] hello from a handler"), std::string::npos)
      << text;
}
