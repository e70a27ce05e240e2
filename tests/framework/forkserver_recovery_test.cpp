// The fork server's failures: SIGINT (ignored), SIGKILL (a new server on the
// next start, the dead one reaped), a reply that arrives after its request
// timed out (discarded), and start failures as typed errors.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <mpx/mpx.hpp>
#include <string>
#include <system_error>
#include <thread>

#include "child_process.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

void exit_with(int code) { mpx::exit(code); }
MPX_REGISTER_FUNCTION(exit_with);

// Exit code 1 when this process ignores SIGINT or SIGPIPE.
void exit_if_ignoring() {
  struct sigaction interrupt {}, pipe {};
  ::sigaction(SIGINT, nullptr, &interrupt);
  ::sigaction(SIGPIPE, nullptr, &pipe);
  mpx::exit(interrupt.sa_handler == SIG_IGN || pipe.sa_handler == SIG_IGN ? 1 : 0);
}
MPX_REGISTER_FUNCTION(exit_if_ignoring);

void sleep_long_r() { std::this_thread::sleep_for(1h); }
MPX_REGISTER_FUNCTION(sleep_long_r);

class ForkServerRecovery : public ::testing::Test {
 protected:
  void SetUp() override { mpx::set_start_method(mpx::StartMethod::forkserver); }
  void TearDown() override {
    mpx::detail::set_forkserver_reply_timeout(30s);
    mpx::set_start_method(mpx::StartMethod::fork);
  }
};

// Waits (at most `timeout`) until `pid` has died; true once it is dead (zombie or gone).
bool wait_dead(pid_t pid, std::chrono::milliseconds timeout) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd p{fd, POLLIN, 0};
  int rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
  ::close(fd);
  return rc == 1;
}

// 'Z' for a zombie, 0 when the pid is no child of ours.
char child_state(pid_t pid) {
  for (auto& child : mpx::test::children_of(::getpid()))
    if (child.pid == pid) return child.state;
  return 0;
}

bool ignores_signal(pid_t pid, int sig) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("SigIgn:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> (sig - 1)) & 1;
  }
  return false;
}

// Resumes a stopped server however the test ends.
struct ContinueOnExit {
  pid_t pid;
  ~ContinueOnExit() { ::kill(pid, SIGCONT); }
};

}  // namespace

TEST_F(ForkServerRecovery, IgnoresSigintAndKeepsServing) {
  mpx::Process first(exit_with, 4);  // the server has set itself up once it served a request
  first.start();
  EXPECT_TRUE(first.join(20s));
  pid_t server = mpx::detail::forkserver_pid();
  ASSERT_GT(server, 0);
  EXPECT_TRUE(ignores_signal(server, SIGINT));
  EXPECT_TRUE(ignores_signal(server, SIGPIPE));
  // Ctrl-C in a terminal: the whole foreground group gets SIGINT. A default
  // SIGINT would have doomed the server by the time kill() returns.
  ASSERT_EQ(::kill(server, SIGINT), 0);
  mpx::Process p(exit_with, 5);
  p.start();
  EXPECT_TRUE(p.join(20s));
  EXPECT_EQ(p.exitcode(), 5);
  EXPECT_EQ(mpx::detail::forkserver_pid(), server);
  // Its workers do not inherit the ignored SIGINT and SIGPIPE (as under fork).
  mpx::Process worker(exit_if_ignoring);
  worker.start();
  EXPECT_TRUE(worker.join(20s));
  EXPECT_EQ(worker.exitcode(), 0) << "the worker ignores SIGINT or SIGPIPE";
}

TEST_F(ForkServerRecovery, KilledServerIsReapedAndReplacedOnTheNextStart) {
  mpx::Process before(sleep_long_r);
  before.start();
  mpx::Process forked(mpx::ProcessOptions().with_start_method(mpx::StartMethod::fork),
                      [] { std::this_thread::sleep_for(1h); });
  forked.start();
  pid_t server = mpx::detail::forkserver_pid();
  ASSERT_GT(server, 0);
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  ASSERT_TRUE(wait_dead(server, 20s));

  // Its worker died with it (PR_SET_PDEATHSIG): join reports SIGKILL.
  EXPECT_TRUE(before.join(20s));
  EXPECT_EQ(before.exitcode(), -SIGKILL);
  // A fork child does not depend on the server.
  EXPECT_TRUE(forked.is_alive());

  mpx::Process after(exit_with, 6);
  EXPECT_NO_THROW(after.start());
  EXPECT_TRUE(after.join(20s));
  EXPECT_EQ(after.exitcode(), 6);
  pid_t replacement = mpx::detail::forkserver_pid();
  EXPECT_GT(replacement, 0);
  EXPECT_NE(replacement, server);
  EXPECT_EQ(child_state(server), 0) << "the dead fork server " << server << " is still a child (zombie)";

  forked.kill();
  EXPECT_TRUE(forked.join(20s));
}

TEST_F(ForkServerRecovery, DeadServerIsReapedWhenItsWorkerIsJoined) {
  mpx::Process before(sleep_long_r);
  before.start();
  pid_t server = mpx::detail::forkserver_pid();
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  EXPECT_TRUE(before.join(20s));
  EXPECT_EQ(before.exitcode(), -SIGKILL);
  EXPECT_EQ(child_state(server), 0) << "the dead fork server " << server << " is still a child (zombie)";
  EXPECT_EQ(mpx::detail::forkserver_pid(), 0);
}

TEST_F(ForkServerRecovery, LateReplyOfATimedOutRequestIsDiscarded) {
  pid_t server = mpx::detail::forkserver_pid();
  ASSERT_GT(server, 0);
  {
    ContinueOnExit resume{server};
    ASSERT_EQ(::kill(server, SIGSTOP), 0);
    mpx::detail::set_forkserver_reply_timeout(200ms);
    mpx::Process late(exit_with, 3);
    EXPECT_THROW(late.start(), mpx::ProcessError);
    mpx::detail::set_forkserver_reply_timeout(30s);
  }  // SIGCONT: the server now answers the timed-out request
  mpx::Process next(exit_with, 4);
  next.start();
  EXPECT_TRUE(next.join(20s));
  EXPECT_EQ(next.exitcode(), 4) << "the reply to the timed-out request was taken for this one";
  EXPECT_EQ(mpx::detail::forkserver_pid(), server);
  EXPECT_TRUE(mpx::active_children().empty());
}

TEST(ForkServerErrors, StartFailuresAreProcessErrorsWithTheErrno) {
  // In a child, so that the descriptor limit does not outlive the test: with
  // no descriptor left, both start methods fail for want of one (EMFILE).
  for (auto method : {mpx::StartMethod::fork, mpx::StartMethod::forkserver}) {
    mpx::test::Child child([method] {
      int lowest = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (lowest < 0) return 10;
      ::close(lowest);
      rlimit limit{};
      ::getrlimit(RLIMIT_NOFILE, &limit);
      limit.rlim_cur = static_cast<rlim_t>(lowest);
      if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return 11;
      mpx::Process p(mpx::ProcessOptions().with_start_method(method), exit_with, 0);
      try {
        p.start();
        return 12;
      } catch (const mpx::ProcessOSError& e) {
        return e.code() == EMFILE ? 0 : 13;
      } catch (const mpx::ProcessError&) {
        return 14;
      } catch (const std::system_error&) {
        return 15;
      }
    });
    EXPECT_EQ(child.join(), 0) << (method == mpx::StartMethod::fork ? "fork" : "forkserver");
  }
}
