// The process samples (seeds 01, 08-14, 31, 32, 34, 35) and the demo, run as
// programs: each test checks the behaviour SEEDS.md states for its seed.
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <set>
#include <string>

#include "test_support.hpp"

using mpx::test::lines_of;
using mpx::test::run_program;
using mpx::test::sample_path;
using namespace std::chrono_literals;

namespace {
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
}  // namespace

TEST(Samples, S01ChildPrintsItsParameterAndJoinReturnsAfterIt) {
  auto r = run_program({sample_path("s01_process_quickstart")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{"Process param : 12", "joined, exitcode 0"}));
}

TEST(Samples, S08EachOfFiveWorkersPrintsItsNumber) {
  auto r = run_program({sample_path("s08_worker_loop")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = lines_of(r.out);
  std::multiset<std::string> got(lines.begin(), lines.end());
  EXPECT_EQ(got, (std::multiset<std::string>{"Worker: 0", "Worker: 1", "Worker: 2", "Worker: 3", "Worker: 4"}));
}

TEST(Samples, S09GivenNamesAndADefaultProcessNName) {
  auto r = run_program({sample_path("s09_process_names")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0], "worker 1 Starting");
  EXPECT_TRUE(std::regex_match(lines[1], std::regex("Process-[0-9]+ Starting"))) << lines[1];
  EXPECT_EQ(lines[2], "my_service Starting");
}

TEST(Samples, S10JoinWithTimeoutReturnsAfterAboutOneSecondWithTheDaemonAlive) {
  auto r = run_program({sample_path("s10_daemon")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("join\\(1\\) returned after ([0-9.e-]+) s, ended=false, "
                                                     "d.is_alive\\(\\)=true")))
      << r.out;
  double waited = std::stod(m[1]);
  EXPECT_GE(waited, 0.95);
  EXPECT_LT(waited, 3.0);
  EXPECT_TRUE(contains(r.out, "Exiting : daemon"));  // joined later, it finishes its 2 s
  EXPECT_TRUE(contains(r.out, "daemon exitcode 0"));
}

TEST(Samples, S10DaemonIsTerminatedWhenItsParentExits) {
  auto r = run_program({sample_path("s10_daemon"), "exit-early"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("main exits, daemon pid ([0-9]+)"))) << r.out;
  pid_t daemon_pid = std::stoi(m[1]);
  // The program has exited and was reaped by run_program: its exit handler
  // terminated and reaped the daemon before that, so the pid is gone.
  EXPECT_FALSE(mpx::test::pid_exists(daemon_pid));
  // It did not wait for the daemon's 2 s sleep: the daemon never got to say
  // it was exiting (no wall-clock bound, which a loaded machine would break).
  EXPECT_FALSE(contains(r.out, "Exiting : daemon")) << r.out;
}

TEST(Samples, S11TerminateThenJoinShowsStateInThePrintedForm) {
  auto r = run_program({sample_path("s11_terminate")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = lines_of(r.out);
  std::vector<std::string> states;
  for (auto& l : lines)
    if (!contains(l, "worker")) states.push_back(l);
  ASSERT_EQ(states.size(), 4u) << r.out;
  EXPECT_TRUE(std::regex_match(states[0], std::regex("BEFORE: <Process name='Process-1' parent=[0-9]+ initial> false")))
      << states[0];
  EXPECT_TRUE(std::regex_match(states[1],
                               std::regex("DURING: <Process name='Process-1' pid=[0-9]+ parent=[0-9]+ started> true")))
      << states[1];
  EXPECT_TRUE(std::regex_match(states[2], std::regex("TERMINATED: <Process name='Process-1' pid=[0-9]+ parent=[0-9]+ "
                                                     "(started> true|stopped exitcode=-SIGTERM> false)")))
      << states[2];
  EXPECT_TRUE(std::regex_match(
      states[3],
      std::regex("JOINED: <Process name='Process-1' pid=[0-9]+ parent=[0-9]+ stopped exitcode=-SIGTERM> false")))
      << states[3];
  EXPECT_FALSE(contains(r.out, "Finished worker"));
}

TEST(Samples, S12ExitCodesAreOneZeroZeroOneAndMinusFifteen) {
  auto r = run_program({sample_path("s12_exit_codes")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{"exit_error.exitcode = 1", "exit_ok.exitcode = 0",
                                                       "return_value.exitcode = 0", "raises.exitcode = 1",
                                                       "terminated.exitcode = -15"}));
  // The exception is reported on stderr with its type and message, by the failing process.
  EXPECT_TRUE(std::regex_search(r.err, std::regex("\\[error/raises [0-9]+\\].*std::runtime_error: There was an error!")))
      << r.err;
}

TEST(Samples, S13LifecycleMessagesAppearOnStderrWithTheProcessName) {
  auto r = run_program({sample_path("s13_logging")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), std::vector<std::string>{"Doing some work"});
  EXPECT_TRUE(std::regex_search(r.err, std::regex("\\[info/Process-1 [0-9]+\\] process started"))) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex("\\[info/Process-1 [0-9]+\\] process exiting with exitcode 0")))
      << r.err;
}

TEST(Samples, S14RunOverrideRunsInTheChild) {
  auto r = run_program({sample_path("s14_process_subclass")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  for (int i = 0; i < 3; ++i) {
    // Default names come from the class, as Python's type(self).__name__.
    EXPECT_TRUE(std::regex_match(lines[i], std::regex("In MyProcess-" + std::to_string(i + 1) + " \\(id " +
                                                      std::to_string(i) + ", pid [0-9]+\\)")))
        << lines[i];
  }
}

TEST(Samples, S31TargetAndSubclassBothWorkWithFork) {
  auto r = run_program({sample_path("s31_start_methods")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{"target: hello world #1 from Process-1",
                                                       "run(): hello from Greeter-2",
                                                       "start method: fork, exitcode 0"}));
}

TEST(Samples, S31ForkserverStartMethodRunsARegisteredTarget) {
  auto r = run_program({sample_path("s31_start_methods"), "forkserver"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{"target: hello world #1 from Process-1",
                                                       "start method: forkserver, exitcode 0"}));
}

TEST(Samples, S32ChildChangesDoNotReachTheParent) {
  auto r = run_program({sample_path("s32_memory_isolation")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{"child: x = 0", "parent: x = 100"}));
}

TEST(Samples, S34ParallelTakesAboutThreeSecondsSerialAboutSix) {
  auto parallel = run_program({sample_path("s34_parallel_sleep")});
  auto serial = run_program({sample_path("s34_parallel_sleep"), "serial"});
  ASSERT_EQ(parallel.exit_code, 0) << parallel.err;
  ASSERT_EQ(serial.exit_code, 0) << serial.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(parallel.out, m, std::regex("parallel total: ([0-9.]+) s"))) << parallel.out;
  double p = std::stod(m[1]);
  ASSERT_TRUE(std::regex_search(serial.out, m, std::regex("serial total: ([0-9.]+) s"))) << serial.out;
  double s = std::stod(m[1]);
  EXPECT_GE(p, 2.95);
  EXPECT_LT(p, 5.0);
  EXPECT_GE(s, 5.95);
  EXPECT_LT(s, 9.0);
}

TEST(Samples, S35PidsAgreeBetweenParentAndChild) {
  auto r = run_program({sample_path("s35_pids")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("parent: getpid\\(\\) = ([0-9]+)"))) << r.out;
  std::string parent = m[1];
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("parent: p.pid\\(\\) = ([0-9]+)"))) << r.out;
  std::string child = m[1];
  EXPECT_TRUE(contains(r.out, "child: getpid() = " + child + ", getppid() = " + parent)) << r.out;
}

TEST(Samples, DemoReportsEveryExitCode) {
  auto r = run_program({sample_path("demo")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("worker-ok' pid=[0-9]+ parent=[0-9]+ stopped exitcode=0>")));
  EXPECT_TRUE(std::regex_search(r.out, std::regex("worker-exit-3' .* stopped exitcode=3>")));
  EXPECT_TRUE(std::regex_search(r.out, std::regex("worker-throws' .* stopped exitcode=1>")));
  EXPECT_TRUE(std::regex_search(r.out, std::regex("worker-hangs' .* stopped exitcode=-SIGTERM>")));
  EXPECT_TRUE(contains(r.err, "simulated failure"));
}
