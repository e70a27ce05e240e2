// mpx::Process: lifecycle, exit codes, identity, reaping, parent death.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mpx/mpx.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

// A pipe the child blocks on until the test releases it: the test decides
// when the child ends, no sleeps involved.
class Gate {
 public:
  Gate() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  }
  ~Gate() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void wait() const {  // in the child: returns when the gate opens
    char c;
    while (::read(fds_[0], &c, 1) < 0 && errno == EINTR) {
    }
  }
  // Writes rather than closes: forked children hold copies of the write end,
  // so closing ours would never reach them as EOF.
  void open() {
    char bytes[64] = {};
    [[maybe_unused]] auto n = ::write(fds_[1], bytes, sizeof bytes);
  }

 private:
  int fds_[2];
};

// A pipe for a child to report a line of text to the test.
class Report {
 public:
  Report() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  }
  ~Report() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void write(const std::string& text) const {
    std::string line = text + "\n";
    [[maybe_unused]] auto n = ::write(fds_[1], line.data(), line.size());
  }
  // Reads one line, waiting at most `timeout`.
  std::string read_line(std::chrono::milliseconds timeout = 20s) const {
    std::string line;
    char c;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{fds_[0], POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return line + "<timeout>";
      if (::read(fds_[0], &c, 1) != 1 || c == '\n') return line;
      line += c;
    }
  }

 private:
  int fds_[2];
};

// Kills and reaps whatever a failed test left behind.
struct KillOnExit {
  std::vector<mpx::Process*> processes;
  ~KillOnExit() {
    for (auto* p : processes) {
      if (p->pid() && p->is_alive()) {
        p->kill();
        p->join();
      }
    }
  }
};

bool wait_until_gone(pid_t pid, std::chrono::milliseconds timeout) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd p{fd, POLLIN, 0};
  int rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
  ::close(fd);
  return rc == 1;
}

// The parent of `pid` from /proc/<pid>/stat, 0 when it is gone.
pid_t parent_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  std::getline(stat, content);
  auto close_paren = content.rfind(')');
  if (close_paren == std::string::npos) return 0;
  std::istringstream rest(content.substr(close_paren + 2));
  char state = 0;
  pid_t ppid = 0;
  rest >> state >> ppid;
  return ppid;
}

// Makes the test a child subreaper for its scope; on the way out it kills
// and reaps the listed processes that were reparented to it, then clears
// the flag, whatever happened in between.
struct SubreaperGuard {
  explicit SubreaperGuard(const std::vector<pid_t>& orphans) : orphans(orphans) {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  }
  ~SubreaperGuard() {
    for (pid_t k : orphans) {
      if (parent_of(k) == ::getpid()) ::kill(k, SIGKILL);
      ::waitpid(k, nullptr, 0);  // ECHILD when it was never ours
    }
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  }
  SubreaperGuard(const SubreaperGuard&) = delete;
  SubreaperGuard& operator=(const SubreaperGuard&) = delete;
  const std::vector<pid_t>& orphans;
};

}  // namespace

TEST(Process, RunsTargetWithArgumentsInAChild) {
  Report report;
  mpx::Process p([&](int a, std::string b) { report.write(std::to_string(a) + b + std::to_string(::getpid())); },
                 12, std::string("x"));
  p.start();
  EXPECT_EQ(report.read_line(), "12x" + std::to_string(p.pid()));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_NE(p.pid(), ::getpid());
}

TEST(Process, ExitCodeFollowsPythonRules) {
  mpx::Process returns([] {});
  mpx::Process returns_int([] { return 7; });  // return value ignored
  mpx::Process exits([] { mpx::exit(5); });
  mpx::Process std_exits([] { std::exit(6); });
  mpx::Process throws([] { throw std::logic_error("bad"); });
  mpx::Process throws_int([] { throw 42; });
  mpx::Process killed([] { std::this_thread::sleep_for(1h); });
  mpx::Process terminated([] { std::this_thread::sleep_for(1h); });
  KillOnExit guard{{&killed, &terminated}};
  for (auto* p : {&returns, &returns_int, &exits, &std_exits, &throws, &throws_int, &killed, &terminated}) p->start();
  killed.kill();
  terminated.terminate();
  for (auto* p : {&returns, &returns_int, &exits, &std_exits, &throws, &throws_int, &killed, &terminated}) p->join();
  EXPECT_EQ(returns.exitcode(), 0);
  EXPECT_EQ(returns_int.exitcode(), 0);
  EXPECT_EQ(exits.exitcode(), 5);
  EXPECT_EQ(std_exits.exitcode(), 6);
  EXPECT_EQ(throws.exitcode(), 1);
  EXPECT_EQ(throws_int.exitcode(), 1);
  EXPECT_EQ(killed.exitcode(), -SIGKILL);
  EXPECT_EQ(terminated.exitcode(), -SIGTERM);
}

TEST(Process, MpxExitUnwindsTheChildStack) {
  Report report;
  mpx::Process p([&] {
    struct Reporter {
      const Report& r;
      ~Reporter() { r.write("destructor ran"); }
    } reporter{report};
    mpx::exit(3);
  });
  p.start();
  EXPECT_EQ(report.read_line(), "destructor ran");
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
}

TEST(Process, ExitCodeIsEmptyWhileRunningAndJoinTimeoutWaits) {
  Gate gate;
  mpx::Process p([&] { gate.wait(); });
  KillOnExit guard{{&p}};
  EXPECT_FALSE(p.exitcode().has_value());
  p.start();
  EXPECT_TRUE(p.is_alive());
  EXPECT_FALSE(p.exitcode().has_value());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(p.join(200ms));
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 190ms);
  EXPECT_LT(waited, 5s);
  EXPECT_TRUE(p.is_alive());
  gate.open();
  EXPECT_TRUE(p.join(20s));
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, DefaultNamesCountUpAndChildrenKnowThemselves) {
  Report report;
  mpx::Process a([] {});
  mpx::Process b(mpx::ProcessOptions().with_name("my_service"), [&] {
    auto self = mpx::current_process();
    auto parent = mpx::parent_process();
    report.write(self.name + "|" + std::to_string(self.pid == ::getpid()) + "|" + (parent ? parent->name : "none") +
                 "|" + std::to_string(parent ? parent->pid : 0));
    // A grandchild's default name extends the child's position in the tree.
    mpx::Process grandchild([&] { report.write(mpx::current_process().name); });
    grandchild.start();
    grandchild.join();
  });
  mpx::Process c([] {});
  EXPECT_TRUE(a.name().starts_with("Process-"));
  EXPECT_TRUE(c.name().starts_with("Process-"));
  int na = std::stoi(a.name().substr(8)), nc = std::stoi(c.name().substr(8));
  EXPECT_EQ(nc, na + 2);
  EXPECT_EQ(mpx::current_process().name, "MainProcess");
  EXPECT_EQ(mpx::current_process().pid, ::getpid());
  EXPECT_FALSE(mpx::parent_process().has_value());
  b.start();
  EXPECT_EQ(report.read_line(), "my_service|1|MainProcess|" + std::to_string(::getpid()));
  EXPECT_EQ(report.read_line(), "Process-" + std::to_string(na + 1) + ":1");
  b.join();
  EXPECT_EQ(b.exitcode(), 0);
}

TEST(Process, CurrentAndParentProcessAreProcessObjects) {
  // In the main process: alive, no exit code, cannot join itself, no parent.
  auto self = mpx::current_process();
  EXPECT_TRUE(self.is_alive());
  EXPECT_FALSE(self.exitcode().has_value());
  EXPECT_THROW((void)self.join(10ms), mpx::ProcessError);
  EXPECT_FALSE(mpx::parent_process().has_value());

  Report report;
  Gate gate;
  mpx::Process p([&] {
    auto parent = mpx::parent_process();
    if (!parent) return report.write("no parent");
    // The parent is there: alive, and join(timeout) times out.
    report.write(std::to_string(parent->is_alive()) + std::to_string(parent->join(50ms)) +
                 std::to_string(parent->exitcode().has_value()) + std::to_string(parent->sentinel() >= 0) +
                 std::to_string(mpx::current_process().is_alive()));
    gate.wait();
  });
  KillOnExit guard{{&p}};
  p.start();
  EXPECT_EQ(report.read_line(), "10011");
  gate.open();
  EXPECT_TRUE(p.join(20s));
  EXPECT_EQ(p.exitcode(), 0);

  // Another process' record tells when it has ended.
  mpx::ProcessInfo ended{"ended", p.pid(), false};
  EXPECT_FALSE(ended.is_alive());
  EXPECT_TRUE(ended.join(10ms));
}

TEST(Process, SubclassRunOverrideRunsInTheChild) {
  struct Worker : mpx::Process {
    explicit Worker(const Report& r) : report(r) {}
    void run() override { report.write("run in " + std::to_string(::getpid())); }
    const Report& report;
  };
  Report report;
  Worker w(report);
  EXPECT_TRUE(w.name().starts_with("Worker-")) << w.name();  // Python: type(self).__name__ + "-N"
  w.start();
  EXPECT_EQ(report.read_line(), "run in " + std::to_string(w.pid()));
  w.join();
  EXPECT_EQ(w.exitcode(), 0);
}

TEST(Process, MisuseRaisesProcessError) {
  mpx::Process p([] {});
  EXPECT_THROW(p.join(), mpx::ProcessError);
  EXPECT_THROW(p.terminate(), mpx::ProcessError);
  p.start();
  EXPECT_THROW(p.start(), mpx::ProcessError);
  EXPECT_THROW(p.set_daemon(true), mpx::ProcessError);
  p.join();
  // A daemon may not start children: the attempt fails in the daemon.
  mpx::Process d(mpx::ProcessOptions().with_daemon(), [] {
    mpx::Process inner([] {});
    try {
      inner.start();
    } catch (const mpx::ProcessError&) {
      mpx::exit(42);
    }
  });
  d.start();
  d.join();
  EXPECT_EQ(d.exitcode(), 42);
  // Only the parent may join: a sibling cannot.
  mpx::Process sibling([] { std::this_thread::sleep_for(1h); });
  KillOnExit guard{{&sibling}};
  sibling.start();
  mpx::Process other([&] {
    try {
      sibling.join();
    } catch (const mpx::ProcessError&) {
      mpx::exit(43);
    }
  });
  other.start();
  other.join();
  EXPECT_EQ(other.exitcode(), 43);
}

TEST(Process, PrintableFormShowsNamePidAndState) {
  Gate gate;
  mpx::Process p(mpx::ProcessOptions().with_name("shown"), [&] { gate.wait(); });
  KillOnExit guard{{&p}};
  EXPECT_EQ(p.to_string(), "<Process name='shown' parent=" + std::to_string(::getpid()) + " initial>");
  p.start();
  EXPECT_EQ(p.to_string(),
            "<Process name='shown' pid=" + std::to_string(p.pid()) + " parent=" + std::to_string(::getpid()) +
                " started>");
  p.terminate();
  p.join();
  EXPECT_EQ(p.to_string(),
            "<Process name='shown' pid=" + std::to_string(p.pid()) + " parent=" + std::to_string(::getpid()) +
                " stopped exitcode=-SIGTERM>");
}

TEST(Process, ActiveChildrenListsRunningAndReapsEnded) {
  Gate gate;
  mpx::Process quick([] {});
  mpx::Process slow([&] { gate.wait(); });
  KillOnExit guard{{&slow}};
  quick.start();
  slow.start();
  quick.join();
  auto children = mpx::active_children();
  ASSERT_EQ(children.size(), 1u);
  EXPECT_EQ(children[0].pid(), slow.pid());
  gate.open();
  slow.join();
  EXPECT_TRUE(mpx::active_children().empty());
}

TEST(Process, DestroyedWhileRunningStaysTrackedNeverOrphaned) {
  Gate gate;
  pid_t pid = 0;
  {
    mpx::Process p([&] { gate.wait(); });
    p.start();
    pid = p.pid();
  }  // destroyed while the child runs
  auto children = mpx::active_children();
  ASSERT_EQ(children.size(), 1u);
  EXPECT_EQ(children[0].pid(), pid);
  gate.open();
  EXPECT_TRUE(children[0].join(20s));
  EXPECT_EQ(children[0].exitcode(), 0);
  EXPECT_TRUE(mpx::active_children().empty());
}

TEST(Process, ThousandShortProcessesLeaveNoZombie) {
  constexpr int kTotal = 1000, kBatch = 50;
  int ok = 0;
  for (int done = 0; done < kTotal; done += kBatch) {
    std::vector<mpx::Process> batch;
    for (int i = 0; i < kBatch; ++i) batch.emplace_back([] {});
    for (auto& p : batch) p.start();
    for (auto& p : batch) {
      p.join();
      ok += p.exitcode() == 0;
    }
  }
  EXPECT_EQ(ok, kTotal);
  for (auto& child : mpx::test::children_of(::getpid())) {
    EXPECT_NE(child.state, 'Z') << "zombie child " << child.pid;
  }
  EXPECT_TRUE(mpx::active_children().empty());
}

TEST(Process, InstallsNoSignalHandlerAndWorksWhenTheHostOwnsSigchld) {
  struct sigaction before {};
  ::sigaction(SIGCHLD, nullptr, &before);
  // The host installs its own SIGCHLD handler: mpx must neither replace it nor need it.
  static std::atomic<int> host_sigchld{0};
  struct sigaction host {};
  host.sa_handler = [](int) { host_sigchld.fetch_add(1); };
  sigemptyset(&host.sa_mask);
  host.sa_flags = SA_RESTART;
  ::sigaction(SIGCHLD, &host, nullptr);
  mpx::Process p([] { mpx::exit(9); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 9);
  struct sigaction after {};
  ::sigaction(SIGCHLD, nullptr, &after);
  EXPECT_EQ(after.sa_handler, host.sa_handler);
  ::sigaction(SIGCHLD, &before, nullptr);
}

TEST(Process, TerminateWorksEvenWhenTheHostBlocksSigterm) {
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &block, &old);
  mpx::Process p([] { std::this_thread::sleep_for(1h); });
  KillOnExit guard{{&p}};
  p.start();
  p.terminate();
  EXPECT_TRUE(p.join(20s));
  EXPECT_EQ(p.exitcode(), -SIGTERM);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

TEST(Process, ChildrenDieWhenTheirParentIsKilled) {
  // The test becomes the subreaper so that orphans are reparented to it and
  // can be reaped here instead of lingering; the guard restores the flag and
  // kills and reaps any orphan left, also when an assertion fails.
  std::vector<pid_t> kids;
  SubreaperGuard reaper{kids};
  Report report;
  mpx::Process parent([&] {
    std::vector<mpx::Process> kids;
    for (int i = 0; i < 3; ++i) kids.emplace_back(mpx::ProcessOptions().with_daemon(i == 0), [] {
      std::this_thread::sleep_for(1h);
    });
    std::string pids;
    for (auto& k : kids) {
      k.start();
      pids += std::to_string(k.pid()) + " ";
    }
    report.write(pids);
    std::this_thread::sleep_for(1h);
  });
  KillOnExit guard{{&parent}};
  parent.start();
  {
    std::istringstream in(report.read_line());
    for (pid_t pid; in >> pid;) kids.push_back(pid);
  }
  ASSERT_EQ(kids.size(), 3u);
  for (pid_t k : kids) EXPECT_TRUE(mpx::test::pid_exists(k));
  parent.kill();
  parent.join();
  for (pid_t k : kids) EXPECT_TRUE(wait_until_gone(k, 20s)) << "child " << k << " outlived its killed parent";
}

TEST(Process, NormalExitJoinsChildrenAndTerminatesDaemons) {
  Report report;
  Gate gate;
  mpx::Process parent([&] {
    mpx::Process daemon(mpx::ProcessOptions().with_daemon(), [] { std::this_thread::sleep_for(1h); });
    mpx::Process worker([&] {
      gate.wait();
      report.write("worker done");
    });
    daemon.start();
    worker.start();
    report.write(std::to_string(daemon.pid()) + " " + std::to_string(worker.pid()));
    // Returns at once: the bootstrap must join `worker` and terminate `daemon`.
  });
  KillOnExit guard{{&parent}};
  parent.start();
  std::istringstream in(report.read_line());
  pid_t daemon_pid = 0, worker_pid = 0;
  in >> daemon_pid >> worker_pid;
  ASSERT_GT(daemon_pid, 0);
  // The parent waits for its non-daemon child: it cannot finish before the gate opens.
  EXPECT_FALSE(parent.join(300ms));
  gate.open();
  EXPECT_EQ(report.read_line(), "worker done");
  EXPECT_TRUE(parent.join(20s));
  EXPECT_EQ(parent.exitcode(), 0);
  EXPECT_FALSE(mpx::test::pid_exists(daemon_pid));
  EXPECT_FALSE(mpx::test::pid_exists(worker_pid));
}

TEST(Process, CpuCountMatchesOnlineCpus) {
  // Independent sources, not the sysconf call the library makes: the kernel's
  // list of online processors in /proc/cpuinfo, and Python's os.cpu_count().
  std::ifstream cpuinfo("/proc/cpuinfo");
  int listed = 0;
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("processor", 0) == 0 && line.find(':') != std::string::npos) ++listed;
  ASSERT_GT(listed, 0) << "no processor lines in /proc/cpuinfo";
  EXPECT_EQ(mpx::cpu_count(), listed);
  auto py = mpx::test::run_program({"/usr/bin/python3", "-c", "import os; print(os.cpu_count())"}, 60s);
  ASSERT_EQ(py.exit_code, 0) << py.err;
  EXPECT_EQ(std::to_string(mpx::cpu_count()) + "\n", py.out);
}
